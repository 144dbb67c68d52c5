-- Views and macros of the engagement database. The worker writes Parquet
-- snapshots; this file only reads them, so a reader never blocks a snapshot.
-- {snapshots} is replaced by the absolute snapshot directory.

CREATE OR REPLACE VIEW student_course_activity AS
SELECT team_id, student_id, course_id, first_seen_at, last_seen_at,
       activity_events, lessons_finished, modules_finished, course_finished,
       favorites, comments, certificate_accessed, last_event,
       student_name, student_email, course_name, team_name, snapshot_at
FROM read_parquet('{snapshots}/student_course_activity/*.parquet',
                  union_by_name = true);

CREATE OR REPLACE VIEW students AS
SELECT team_id, student_id, student_name, student_email, created_at, snapshot_at
FROM read_parquet('{snapshots}/students/*.parquet', union_by_name = true);

-- The worker's recent days, plus the days it let go, as they were then. A
-- day let go and then reached by a late event appears in both: the sum is
-- its total.
CREATE OR REPLACE VIEW engagement_daily AS
SELECT team_id, student_id, course_id, day,
       sum(activity_events)::BIGINT AS activity_events,
       sum(visits)::BIGINT AS visits,
       sum(lesson_finishes)::BIGINT AS lesson_finishes,
       sum(comments)::BIGINT AS comments
FROM (
    SELECT * FROM read_parquet('{snapshots}/engagement_daily/*.parquet',
                               union_by_name = true)
    UNION ALL BY NAME
    SELECT * FROM read_parquet('{snapshots}/engagement_daily_archive/*.parquet',
                               union_by_name = true)
)
GROUP BY team_id, student_id, course_id, day;

-- Recency of every unfinished (team, student, course) as of a reference time.
CREATE OR REPLACE MACRO churn_risk_at(as_of) AS TABLE
SELECT team_id, student_id, course_id, student_name, student_email,
       first_seen_at, last_seen_at, activity_events, lessons_finished,
       (epoch_us(CAST(as_of AS TIMESTAMPTZ)) - epoch_us(last_seen_at))
           / 86400e6 AS days_since_last_seen
FROM student_course_activity
WHERE last_seen_at IS NOT NULL AND NOT course_finished
ORDER BY days_since_last_seen DESC, team_id, student_id, course_id;

CREATE OR REPLACE VIEW churn_risk AS
SELECT * FROM churn_risk_at(now());

-- Signed bodies the receiver could not use, with the reason (the bytes stay
-- on the rejected topic for its retention). A batch the worker read twice
-- after a crash wrote its rows twice: one row per record of the topic.
CREATE OR REPLACE VIEW rejected_events AS
SELECT received_at, reason, kind, event_id, event_name, size_bytes, sha256
FROM read_parquet('{snapshots}/rejected_events/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY "partition", "offset") = 1;
