-- The views over the snapshot files, rebuilt after every snapshot (the
-- analyses, in views.sql, read them by name). {current:<table>} is replaced
-- by a query of the table's current rows (its partitions' base and delta
-- files, see analytics.snapshots) and {files:history} by the history files
-- within retention.

CREATE OR REPLACE VIEW student_course_activity AS
SELECT team_id, student_id, course_id, first_seen_at, last_seen_at,
       activity_events, lessons_finished, modules_finished, course_finished,
       favorites, comments, certificate_accessed, last_event,
       student_name, student_email, course_name, team_name, snapshot_at
FROM ({current:student_course_activity});

CREATE OR REPLACE VIEW students AS
SELECT team_id, student_id, student_name, student_email, created_at, snapshot_at
FROM ({current:students});

-- The rows of student_course_activity as past snapshots saw them: one per
-- key and snapshot that changed it, and one per key whenever a worker took
-- its partition whole (at start, or from another worker). The key's state as
-- of a time T is its row with the latest snapshot_at <= T.
CREATE OR REPLACE VIEW student_course_activity_history AS
SELECT team_id, student_id, course_id, first_seen_at, last_seen_at,
       activity_events, lessons_finished, modules_finished, course_finished,
       favorites, comments, certificate_accessed, last_event,
       course_name, team_name, snapshot_at
FROM read_parquet({files:history}, union_by_name = true);

-- The worker keeps each key's recent days (45 behind its latest activity);
-- the days it let go are kept here as they were then. A day let go and then
-- reached by a late event appears in both: the sum is its total. Only the
-- days found among the released ones are summed; the rest (the great
-- majority) pass through as they are.
CREATE OR REPLACE VIEW engagement_daily AS
WITH recent AS (
    SELECT team_id, student_id, course_id, day, activity_events, visits,
           lesson_finishes, comments
    FROM ({current:engagement_daily})
),
released AS (
    SELECT team_id, student_id, course_id, day, activity_events, visits,
           lesson_finishes, comments
    FROM ({current:engagement_daily_released})
)
SELECT team_id, student_id, course_id, day,
       activity_events::BIGINT AS activity_events, visits::BIGINT AS visits,
       lesson_finishes::BIGINT AS lesson_finishes, comments::BIGINT AS comments
FROM recent ANTI JOIN released USING (team_id, student_id, course_id, day)
UNION ALL
SELECT team_id, student_id, course_id, day,
       sum(activity_events)::BIGINT, sum(visits)::BIGINT,
       sum(lesson_finishes)::BIGINT, sum(comments)::BIGINT
FROM (
    SELECT * FROM released
    UNION ALL
    SELECT * FROM recent SEMI JOIN released USING (team_id, student_id, course_id, day)
)
GROUP BY team_id, student_id, course_id, day;
