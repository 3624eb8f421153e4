-- The HNSW index moves to a table of its own, kept up to date behind the
-- epochs' commits (sinks/src/vector_index.rs). Each new idea's insert into a
-- live HNSW index walks the graph (1.5 ms at 40,000 ideas here): inside the
-- epoch's transaction, at ~800 new ideas/s, that alone took longer than the
-- epoch and a live pipeline fell further behind every epoch. The rows,
-- scores and progress now commit without it; the vectors become searchable
-- moments later (`ideaflow_vector_index_pending` says how many wait).
-- idea_rows keeps its embedding column: `ideas` still shows every vector.
CREATE TABLE idea_vectors (
    idea_id UUID PRIMARY KEY,
    embedding vector(384) NOT NULL
);
DROP INDEX IF EXISTS ideas_embedding;
INSERT INTO idea_vectors (idea_id, embedding) SELECT id, embedding FROM idea_rows;
CREATE INDEX idea_vectors_embedding ON idea_vectors USING hnsw (embedding vector_cosine_ops);
