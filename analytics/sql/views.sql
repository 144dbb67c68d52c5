-- Views and macros of the engagement database. The worker writes Parquet
-- snapshots; the database only reads them, so a reader never blocks a
-- snapshot. The tables' views are in tables.sql; {snapshots} is replaced by
-- the absolute snapshot directory.

-- Signed bodies the receiver could not use, with the reason (the bytes stay
-- on the rejected topic for its retention). A batch the worker read twice
-- after a crash wrote its rows twice: one row per record of the topic.
CREATE OR REPLACE VIEW rejected_events AS
SELECT received_at, reason, kind, event_id, event_name, size_bytes, sha256
FROM read_parquet('{snapshots}/rejected_events/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY "partition", "offset") = 1;

-- Inactivity alerts (app.alerts): one row per alert_id, the first detection
-- of it, however many times it was written; in the order detected.
CREATE OR REPLACE VIEW inactivity_alerts AS
SELECT alert_id, kind, team_id, student_id, course_id, threshold_days,
       last_seen_at, days_inactive, detected_at, catch_up, active_again_at,
       student_name, student_email
FROM read_parquet('{snapshots}/inactivity_alerts/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY detected_at) = 1
ORDER BY detected_at, alert_id;

-- Every attempt at delivering an alert to a school's URL, once each, in the
-- order made.
CREATE OR REPLACE VIEW alert_deliveries AS
SELECT alert_id, team_id, attempt, attempted_at, status, error, delivered
FROM read_parquet('{snapshots}/alert_deliveries/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY alert_id, attempt, attempted_at) = 1
ORDER BY attempted_at, alert_id, attempt;

-- Every analysis below is a table macro <name>_at(as_of, ...) and a view
-- <name>, the macro as of now(). as_of is a TIMESTAMPTZ. Days are UTC days
-- whatever the session's time zone: times are compared as epoch
-- microseconds, and a day starts at (day - 1970-01-01) days after the epoch.
-- A window of N days holds the days whose start lies in [as_of - N days,
-- as_of).

CREATE OR REPLACE MACRO engagement_as_of_us(as_of) AS
    epoch_us(CAST(as_of AS TIMESTAMPTZ));

CREATE OR REPLACE MACRO engagement_day_start_us(day) AS
    CAST(day - DATE '1970-01-01' AS BIGINT) * 86400000000;

-- The first day whose start lies at or after n days before as_of: a window
-- of n days is [engagement_window_start(as_of, n), engagement_window_start(as_of, 0)).
CREATE OR REPLACE MACRO engagement_window_start(as_of, n) AS
    DATE '1970-01-01' + CAST(ceil(
        (engagement_as_of_us(as_of) - n * 86400000000) / 86400000000) AS INTEGER);

-- The UTC day of an instant, and the Monday that starts its week.
CREATE OR REPLACE MACRO engagement_utc_day(instant) AS
    CAST(timezone('UTC', CAST(instant AS TIMESTAMPTZ)) AS DATE);

CREATE OR REPLACE MACRO engagement_week(day) AS
    CAST(day AS DATE) - CAST(isodow(CAST(day AS DATE)) - 1 AS INTEGER);

-- The band of an unfinished key: onboarding, else by days since last seen.
CREATE OR REPLACE MACRO engagement_risk_band(
    days_since_last_seen, onboarding, cooling, at_risk, churned) AS
    CASE WHEN onboarding THEN 'onboarding'
         WHEN days_since_last_seen < cooling THEN 'active'
         WHEN days_since_last_seen < at_risk THEN 'cooling'
         WHEN days_since_last_seen < churned THEN 'at_risk'
         ELSE 'churned' END;

-- Each unfinished (team, student, course), with how recently and how often
-- it was active, and a risk score from 0 (thriving) to 100 (gone):
--
--   recency    = min(days since last seen / churned, 1)       weight 0.5
--   frequency  = 1 - min(active days of the last 28, 14) / 14  weight 0.2
--   decline    = max(-trend, 0), 1 when not active in the 28   weight 0.2
--   unfinished = 1 - progress (1 when progress is unknown)     weight 0.1
--
-- trend compares the daily rate of activity events of the last 7 days (r7)
-- with that of the 21 days before (r21): (r7 - r21) / max(r7, r21), from -1
-- (stopped) through 0 (steady) to 1 (only recently active); 0 when both are
-- 0. progress is lessons finished over the course's size; AlpaClass does not
-- send a course's size, so it is estimated as the most lessons any student
-- of that course at that school has finished (NULL while nobody finished
-- one; the unfinished term is then 1).
--
-- A key first seen after as_of is left out, and one seen after it counts as
-- seen at as_of (the state is today's: an as_of in the past is approximate).
--
-- risk_band: onboarding when the student registered less than 7 days before
-- as_of; otherwise active, cooling, at_risk or churned by days since last
-- seen, with cut-offs cooling (7), at_risk (14) and churned (30).
CREATE OR REPLACE MACRO churn_risk_at(as_of, cooling := 7, at_risk := 14, churned := 30) AS TABLE
WITH recent AS (
    SELECT d.team_id, d.student_id, d.course_id,
           count(*) FILTER (WHERE d.day >= engagement_window_start(as_of, 7))
               AS active_days_7,
           count(*) AS active_days_28,
           coalesce(sum(d.activity_events) FILTER (
               WHERE d.day >= engagement_window_start(as_of, 7)), 0) AS events_7,
           coalesce(sum(d.activity_events) FILTER (
               WHERE d.day < engagement_window_start(as_of, 7)), 0) AS events_21
    FROM engagement_daily AS d
    WHERE d.activity_events > 0
      AND d.day >= engagement_window_start(as_of, 28)
      AND d.day < engagement_window_start(as_of, 0)
    GROUP BY d.team_id, d.student_id, d.course_id
),
courses AS (
    SELECT team_id, course_id, max(lessons_finished) AS course_lessons
    FROM student_course_activity
    GROUP BY team_id, course_id
),
measured AS (
    SELECT a.team_id, a.student_id, a.course_id, a.student_name, a.student_email,
           a.course_name, a.last_seen_at, a.lessons_finished, c.course_lessons,
           s.created_at,
           greatest(engagement_as_of_us(as_of) - epoch_us(a.last_seen_at), 0)
               / 86400e6 AS days_since_last_seen,
           coalesce(r.active_days_7, 0) AS active_days_7,
           coalesce(r.active_days_28, 0) AS active_days_28,
           coalesce(r.events_7, 0) / 7.0 AS rate_7,
           coalesce(r.events_21, 0) / 21.0 AS rate_21,
           s.created_at IS NOT NULL
               AND epoch_us(s.created_at)
                   > engagement_as_of_us(as_of) - 7 * 86400000000
               AND epoch_us(s.created_at) <= engagement_as_of_us(as_of) AS onboarding
    FROM student_course_activity AS a
    LEFT JOIN recent AS r USING (team_id, student_id, course_id)
    LEFT JOIN courses AS c USING (team_id, course_id)
    LEFT JOIN students AS s USING (team_id, student_id)
    WHERE NOT a.course_finished AND a.last_seen_at IS NOT NULL
      AND epoch_us(a.first_seen_at) <= engagement_as_of_us(as_of)
),
scored AS (
    SELECT *,
           CASE WHEN rate_7 = 0 AND rate_21 = 0 THEN 0.0
                ELSE (rate_7 - rate_21) / greatest(rate_7, rate_21) END AS trend,
           lessons_finished / nullif(course_lessons, 0) AS progress
    FROM measured
),
banded AS (
    SELECT *,
           100 * (0.5 * least(greatest(days_since_last_seen, 0) / churned, 1)
                  + 0.2 * (1 - least(active_days_28, 14) / 14)
                  + 0.2 * CASE WHEN active_days_28 = 0 THEN 1
                               ELSE greatest(-trend, 0) END
                  + 0.1 * (1 - coalesce(progress, 0))) AS risk_score,
           engagement_risk_band(days_since_last_seen, onboarding,
                                cooling, at_risk, churned) AS risk_band
    FROM scored
)
SELECT team_id, student_id, course_id, student_name, student_email, course_name,
       last_seen_at, days_since_last_seen, active_days_7, active_days_28, trend,
       progress, risk_score, risk_band,
       nullif(concat_ws('; ',
           CASE WHEN onboarding THEN 'registered less than 7 days ago' END,
           CASE WHEN days_since_last_seen >= cooling
                THEN 'not seen for ' || CAST(floor(days_since_last_seen) AS BIGINT) || ' days' END,
           CASE WHEN active_days_28 <= 2
                THEN 'active on ' || active_days_28 || ' of the last 28 days' END,
           CASE WHEN trend <= -0.5 AND rate_21 > 0
                THEN 'activity down ' || CAST(round(-trend * 100) AS BIGINT)
                    || '% against the 3 weeks before' END,
           CASE WHEN progress < 0.25
                THEN lessons_finished || ' of about ' || course_lessons || ' lessons finished' END
       ), '') AS reasons
FROM banded
ORDER BY risk_score DESC, team_id, student_id, course_id;

CREATE OR REPLACE VIEW churn_risk AS
SELECT * FROM churn_risk_at(now());

-- Per team and course, how many keys churn_risk_at puts in each risk band,
-- as of `weeks` instants a week apart (point_at), the last one as_of: the same keys and
-- bands as churn_risk_at(point) at each point, without scoring them (a band
-- needs only the last-seen and registration times), so one pass over the
-- state serves every point. As approximate for the past as churn_risk_at.
CREATE OR REPLACE MACRO risk_bands_at(as_of, weeks := 13, cooling := 7, at_risk := 14, churned := 30) AS TABLE
WITH points AS (
    SELECT engagement_as_of_us(as_of) - back * 7 * 86400000000 AS point_us
    FROM range(0, CASE WHEN weeks BETWEEN 1 AND 520 THEN weeks
                       ELSE error('risk_bands_at: weeks must be between 1 and 520')
                  END) AS t(back)
),
keys AS (
    SELECT a.team_id, a.course_id, epoch_us(a.first_seen_at) AS first_seen_us,
           epoch_us(a.last_seen_at) AS last_seen_us, epoch_us(s.created_at) AS created_us
    FROM student_course_activity AS a
    LEFT JOIN students AS s USING (team_id, student_id)
    WHERE NOT a.course_finished AND a.last_seen_at IS NOT NULL
)
SELECT k.team_id, k.course_id, make_timestamptz(p.point_us) AS point_at,
       engagement_risk_band(
           greatest(p.point_us - k.last_seen_us, 0) / 86400e6,
           coalesce(k.created_us > p.point_us - 7 * 86400000000
                    AND k.created_us <= p.point_us, false),
           cooling, at_risk, churned) AS risk_band,
       count(*) AS keys
FROM keys AS k, points AS p
WHERE k.first_seen_us <= p.point_us
GROUP BY ALL
ORDER BY k.team_id, point_at, k.course_id, risk_band;

CREATE OR REPLACE VIEW risk_bands AS
SELECT * FROM risk_bands_at(now());

-- Unfinished (team, student, course) not seen for at least min_days.
CREATE OR REPLACE MACRO inactive_students_at(as_of, min_days := 7) AS TABLE
SELECT team_id, student_id, course_id, student_name, student_email, course_name,
       last_seen_at,
       (engagement_as_of_us(as_of) - epoch_us(last_seen_at)) / 86400e6
           AS days_since_last_seen
FROM student_course_activity
WHERE NOT course_finished
  AND last_seen_at IS NOT NULL
  AND (engagement_as_of_us(as_of) - epoch_us(last_seen_at)) / 86400e6 >= min_days
ORDER BY days_since_last_seen DESC, team_id, student_id, course_id;

CREATE OR REPLACE VIEW inactive_students AS
SELECT * FROM inactive_students_at(now());

-- Students registered at least min_days before as_of who never did anything
-- in any course.
CREATE OR REPLACE MACRO never_started_at(as_of, min_days := 3) AS TABLE
SELECT s.team_id, s.student_id, s.student_name, s.student_email, s.created_at,
       (engagement_as_of_us(as_of) - epoch_us(s.created_at)) / 86400e6
           AS days_since_registration
FROM students AS s
WHERE s.created_at IS NOT NULL
  AND epoch_us(s.created_at) <= engagement_as_of_us(as_of) - min_days * 86400000000
  AND NOT EXISTS (
      SELECT 1 FROM student_course_activity AS a
      WHERE a.team_id = s.team_id AND a.student_id = s.student_id)
ORDER BY days_since_registration DESC, s.team_id, s.student_id;

CREATE OR REPLACE VIEW never_started AS
SELECT * FROM never_started_at(now());

-- Per team and day of the last `days` days, per course and school-wide
-- (course_id NULL): students active that day, in the 7 and the 28 days
-- ending that day, and stickiness (active that day over active in the 28).
-- Days on which nobody was active in the 28 days ending then have no row.
--
-- Counted with one bit mask per student (and course): bit p is set when
-- the student was active p days before the window's last day. A student
-- counts on a day for the n days ending then when one of the n bits from
-- that day's on is set; OR-ing the mask with itself shifted by 1, 2, 3
-- (then 4, 8, 12) sets exactly those. A UHUGEINT holds 128 days, so
-- `days` is at most 100 (the 28-day count looks 27 days further back).
-- '' stands for "the whole school" inside, as no id is empty.
CREATE OR REPLACE MACRO daily_active_at(as_of, days := 35) AS TABLE
WITH checked AS (
    SELECT CASE WHEN days BETWEEN 1 AND 100 THEN days
                ELSE error('daily_active_at: days must be between 1 and 100')
           END AS window_days
),
bounds AS (
    SELECT window_days,
           engagement_window_start(as_of, window_days + 27) AS first_day,
           engagement_window_start(as_of, 0) AS end_day
    FROM checked
),
course_masks AS (
    SELECT d.team_id, d.course_id, d.student_id,
           bit_or(CAST(1 AS UHUGEINT) << CAST(b.end_day - 1 - d.day AS UHUGEINT))
               AS active
    FROM engagement_daily AS d, bounds AS b
    WHERE d.activity_events > 0 AND d.day >= b.first_day AND d.day < b.end_day
    GROUP BY d.team_id, d.course_id, d.student_id
),
masks AS (
    SELECT team_id, course_id, active FROM course_masks
    UNION ALL
    SELECT team_id, '' AS course_id, bit_or(active)
    FROM course_masks
    GROUP BY team_id, student_id
),
spread AS (
    SELECT team_id, course_id, active,
           active | (active >> CAST(1 AS UHUGEINT)) AS within_2
    FROM masks
),
spread_4 AS (
    SELECT *, within_2 | (within_2 >> CAST(2 AS UHUGEINT)) AS within_4 FROM spread
),
spread_8 AS (
    SELECT *, within_4 | (within_4 >> CAST(3 AS UHUGEINT)) AS within_7,
           within_4 | (within_4 >> CAST(4 AS UHUGEINT)) AS within_8
    FROM spread_4
),
spread_28 AS (
    SELECT team_id, course_id, active, within_7,
           within_8 | (within_8 >> CAST(8 AS UHUGEINT)) AS within_16
    FROM spread_8
),
covered AS (
    SELECT team_id, course_id, active, within_7,
           within_16 | (within_16 >> CAST(12 AS UHUGEINT)) AS within_28
    FROM spread_28
),
offsets AS (
    SELECT unnest(range(0, window_days)) AS back, end_day FROM bounds
),
counted AS (
    SELECT c.team_id, c.course_id, o.end_day - 1 - CAST(o.back AS INTEGER) AS day,
           count(*) FILTER (WHERE ((c.active >> CAST(o.back AS UHUGEINT))
                                   & CAST(1 AS UHUGEINT)) = 1) AS active_students,
           count(*) FILTER (WHERE ((c.within_7 >> CAST(o.back AS UHUGEINT))
                                   & CAST(1 AS UHUGEINT)) = 1) AS active_students_7d,
           count(*) FILTER (WHERE ((c.within_28 >> CAST(o.back AS UHUGEINT))
                                   & CAST(1 AS UHUGEINT)) = 1) AS active_students_28d
    FROM covered AS c, offsets AS o
    GROUP BY c.team_id, c.course_id, o.end_day, o.back
)
SELECT team_id, nullif(course_id, '') AS course_id, day, active_students,
       active_students_7d, active_students_28d,
       active_students / active_students_28d AS stickiness
FROM counted
WHERE active_students_28d > 0
ORDER BY team_id, day, course_id NULLS FIRST;

CREATE OR REPLACE VIEW daily_active AS
SELECT * FROM daily_active_at(now());

-- The weeks (Monday, UTC) in which each student was active before as_of.
CREATE OR REPLACE MACRO engagement_active_weeks(as_of) AS TABLE
SELECT DISTINCT team_id, student_id, engagement_week(day) AS week
FROM engagement_daily
WHERE activity_events > 0
  AND engagement_day_start_us(day) < engagement_as_of_us(as_of);

-- Per team: students by the week they registered (Monday, UTC), and for each
-- week since, how many of them were active in it. Weeks that had not begun
-- by as_of have no row.
CREATE OR REPLACE MACRO cohort_retention_at(as_of) AS TABLE
WITH point AS (
    SELECT engagement_as_of_us(as_of) AS now_us,
           engagement_week(engagement_utc_day(as_of)) AS current_week
),
cohorts AS (
    SELECT team_id, student_id, engagement_week(engagement_utc_day(created_at)) AS cohort_week
    FROM students, point
    WHERE created_at IS NOT NULL AND epoch_us(created_at) < now_us
),
sizes AS (
    SELECT team_id, cohort_week, count(*) AS cohort_size
    FROM cohorts GROUP BY team_id, cohort_week
),
grid AS (
    SELECT team_id, cohort_week, cohort_size,
           unnest(range(0, CAST((current_week - cohort_week) / 7 + 1 AS BIGINT)))
               AS weeks_since_registration
    FROM sizes, point
),
weekly AS (SELECT * FROM engagement_active_weeks(as_of)),
retained AS (
    SELECT c.team_id, c.cohort_week,
           CAST((w.week - c.cohort_week) / 7 AS BIGINT) AS weeks_since_registration,
           count(*) AS active_students
    FROM cohorts AS c
    JOIN weekly AS w USING (team_id, student_id)
    WHERE w.week >= c.cohort_week
    GROUP BY ALL
)
SELECT g.team_id, g.cohort_week, g.weeks_since_registration, g.cohort_size,
       coalesce(r.active_students, 0) AS active_students,
       coalesce(r.active_students, 0) / g.cohort_size AS share_active
FROM grid AS g
LEFT JOIN retained AS r USING (team_id, cohort_week, weeks_since_registration)
ORDER BY g.team_id, g.cohort_week, g.weeks_since_registration;

CREATE OR REPLACE VIEW cohort_retention AS
SELECT * FROM cohort_retention_at(now());

-- Per team and week (Monday, UTC), from a team's first active week to the
-- last week that ended by as_of (a week under way would show everyone not yet
-- back as dormant): students active for the first time (new), active this
-- week and the week before (returning), active again after at least a week
-- away (resurrecting), and active the week before but not this one (dormant).
CREATE OR REPLACE MACRO weekly_lifecycle_at(as_of) AS TABLE
WITH point AS (
    SELECT engagement_week(DATE '1970-01-01' + CAST(floor(
               (engagement_as_of_us(as_of) - 7 * 86400000000) / 86400000000)
               AS INTEGER)) AS current_week
),
weekly AS (SELECT * FROM engagement_active_weeks(as_of)),
firsts AS (
    SELECT team_id, student_id, min(week) AS first_week
    FROM weekly GROUP BY team_id, student_id
),
weeks AS (
    SELECT team_id,
           min(first_week) + 7 * CAST(unnest(range(0,
               CAST((max(current_week) - min(first_week)) / 7 + 1 AS BIGINT))) AS INTEGER)
               AS week
    FROM firsts, point
    GROUP BY team_id
),
students_weeks AS (
    SELECT w.team_id, w.week, f.student_id, f.first_week,
           EXISTS (SELECT 1 FROM weekly AS a WHERE a.team_id = w.team_id
                   AND a.student_id = f.student_id AND a.week = w.week) AS now_active,
           EXISTS (SELECT 1 FROM weekly AS a WHERE a.team_id = w.team_id
                   AND a.student_id = f.student_id AND a.week = w.week - 7) AS was_active
    FROM weeks AS w
    JOIN firsts AS f ON f.team_id = w.team_id AND f.first_week <= w.week
)
SELECT team_id, week,
       count(*) FILTER (WHERE now_active AND first_week = week) AS new_students,
       count(*) FILTER (WHERE now_active AND was_active) AS returning_students,
       count(*) FILTER (WHERE now_active AND NOT was_active AND first_week < week)
           AS resurrecting_students,
       count(*) FILTER (WHERE was_active AND NOT now_active) AS dormant_students
FROM students_weeks
GROUP BY team_id, week
ORDER BY team_id, week;

CREATE OR REPLACE VIEW weekly_lifecycle AS
SELECT * FROM weekly_lifecycle_at(now());

-- Per (team, course): students who started it by as_of, and how many of them
-- have finished at least a lesson, at least a module, the course, and
-- opened the certificate (as the state stands now).
CREATE OR REPLACE MACRO course_funnel_at(as_of) AS TABLE
SELECT team_id, course_id,
       arg_max(course_name, last_seen_at) AS course_name,
       count(*) AS started,
       count(*) FILTER (WHERE lessons_finished >= 1) AS finished_a_lesson,
       count(*) FILTER (WHERE modules_finished >= 1) AS finished_a_module,
       count(*) FILTER (WHERE course_finished) AS finished_course,
       count(*) FILTER (WHERE certificate_accessed) AS accessed_certificate
FROM student_course_activity
WHERE epoch_us(first_seen_at) < engagement_as_of_us(as_of)
GROUP BY team_id, course_id
ORDER BY team_id, started DESC, course_id;

CREATE OR REPLACE VIEW course_funnel AS
SELECT * FROM course_funnel_at(now());
