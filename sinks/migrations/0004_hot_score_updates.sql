-- Score updates rewrite a row of idea_scores on every tick. With `score` in
-- an index, none of them can be HOT (heap-only: no index entries written);
-- without it, each stays on its page (fillfactor 70) and only the table is
-- written. Top-K reads go to Redis (`{ns}:top:{category}`), and a scan of
-- idea_scores for the API's ranked lists is cheap next to the writes saved.
DROP INDEX IF EXISTS idea_scores_rank;
