-- `ideas` is what readers query: every idea with its score and its five
-- factors. The rows and their vectors live in idea_rows and the scores in
-- idea_scores, so that the score updates of every tick never touch a row
-- whose vector the HNSW index holds (see 0001 and 0004).
DROP VIEW ideas_scored;
ALTER TABLE ideas RENAME TO idea_rows;
CREATE VIEW ideas AS
SELECT i.*, s.score, s.freshness, s.engagement, s.novelty, s.community_fit,
       s.seasonality, s.scored_at
FROM idea_rows i LEFT JOIN idea_scores s ON s.idea_id = i.id;
