//! One MULTI/EXEC transaction whose commands reach the server while the rest
//! are still being encoded.
//!
//! `redis::Pipeline::atomic().query()` encodes a whole epoch, sends it, and
//! only then does the server start queuing it: the client's encoding and the
//! server's work run one after the other. Here every `CHUNK` commands are
//! sent as soon as they are built, so the server queues one chunk while the
//! next is encoded. Atomicity is unchanged: nothing runs before EXEC, and a
//! command the server refuses to queue aborts the whole transaction.

use redis::{Connection, Pipeline, RedisResult, Value};

/// Commands sent per write (a few hundred KB of protocol).
const CHUNK: usize = 1024;

pub struct StreamedTransaction<'c> {
    conn: &'c mut Connection,
    /// Commands built but not yet sent (a plain, non-atomic pipeline: MULTI
    /// and EXEC are written by `begin` and `commit`).
    pending: Pipeline,
    /// Commands sent after MULTI, each owing a `QUEUED` reply.
    queued: usize,
}

impl<'c> StreamedTransaction<'c> {
    /// Sends MULTI.
    pub fn begin(conn: &'c mut Connection) -> RedisResult<Self> {
        conn.send_packed_command(&redis::cmd("MULTI").get_packed_command())?;
        Ok(StreamedTransaction {
            conn,
            pending: Pipeline::with_capacity(CHUNK),
            queued: 0,
        })
    }

    /// Where the next commands are added; call [`Self::flush_if_full`] after
    /// adding a few.
    pub fn pipe(&mut self) -> &mut Pipeline {
        &mut self.pending
    }

    /// Sends the pending commands once there are `CHUNK` of them.
    pub fn flush_if_full(&mut self) -> RedisResult<()> {
        if self.pending.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> RedisResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.conn
            .send_packed_command(&self.pending.get_packed_pipeline())?;
        self.queued += self.pending.len();
        self.pending.clear();
        Ok(())
    }

    /// Sends the rest and EXEC, then reads every reply. All replies are read
    /// even after an error, so the connection stays in step; the first error
    /// (a refused command aborts the transaction; a command failing inside
    /// EXEC is reported too) is returned.
    pub fn commit(mut self) -> RedisResult<()> {
        self.flush()?;
        self.conn
            .send_packed_command(&redis::cmd("EXEC").get_packed_command())?;
        let mut first_error = None;
        // MULTI's OK, one QUEUED per command, then EXEC's array.
        for _ in 0..self.queued + 2 {
            let reply = self.conn.recv_response().and_then(Value::extract_error);
            if let (Err(e), None) = (reply, &first_error) {
                first_error = Some(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
