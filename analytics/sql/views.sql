-- Views and macros of the engagement database. The worker writes Parquet
-- snapshots; this file only reads them, so a reader never blocks a snapshot.
-- {snapshots} is replaced by the absolute snapshot directory.

CREATE OR REPLACE VIEW student_course_activity AS
SELECT team_id, student_id, course_id, first_seen_at, last_seen_at,
       activity_events, snapshot_at
FROM read_parquet('{snapshots}/student_course_activity/*.parquet',
                  union_by_name = true);

-- Recency of every (team, student, course) as of a reference time.
CREATE OR REPLACE MACRO churn_risk_at(as_of) AS TABLE
SELECT team_id, student_id, course_id, first_seen_at, last_seen_at,
       activity_events,
       (epoch_us(CAST(as_of AS TIMESTAMPTZ)) - epoch_us(last_seen_at))
           / 86400e6 AS days_since_last_seen
FROM student_course_activity
WHERE last_seen_at IS NOT NULL
ORDER BY days_since_last_seen DESC, team_id, student_id, course_id;

CREATE OR REPLACE VIEW churn_risk AS
SELECT * FROM churn_risk_at(now());
