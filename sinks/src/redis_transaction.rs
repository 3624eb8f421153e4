//! One MULTI/EXEC transaction whose commands reach the server while the rest
//! are still being encoded.
//!
//! `redis::Pipeline::atomic().query()` encodes a whole epoch, sends it, and
//! only then does the server start queuing it: the client's encoding and the
//! server's work run one after the other. Here every `CHUNK` commands are
//! sent as soon as they are built, so the server queues one chunk while the
//! next is encoded. Atomicity is unchanged: nothing runs before EXEC, and a
//! command the server refuses to queue aborts the whole transaction.

use redis::{Cmd, Connection, RedisResult, Value};

/// Commands sent per write (a few hundred KB of protocol).
const CHUNK: usize = 1024;

pub struct StreamedTransaction<'c> {
    conn: &'c mut Connection,
    /// Commands packed but not yet sent (MULTI and EXEC are written by
    /// `begin` and `commit`): packed as they are added, each straight into
    /// this buffer, so no command is held as an object or encoded twice.
    pending: Vec<u8>,
    /// How many commands `pending` holds.
    pending_commands: usize,
    /// Commands sent after MULTI, each owing a `QUEUED` reply.
    queued: usize,
}

impl<'c> StreamedTransaction<'c> {
    /// Sends MULTI.
    pub fn begin(conn: &'c mut Connection) -> RedisResult<Self> {
        conn.send_packed_command(&redis::cmd("MULTI").get_packed_command())?;
        Ok(StreamedTransaction {
            conn,
            pending: Vec::new(),
            pending_commands: 0,
            queued: 0,
        })
    }

    /// Adds a command to the transaction; every `CHUNK` commands are sent.
    pub fn add(&mut self, cmd: &Cmd) -> RedisResult<()> {
        cmd.write_packed_command(&mut self.pending);
        self.pending_commands += 1;
        if self.pending_commands >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> RedisResult<()> {
        if self.pending_commands == 0 {
            return Ok(());
        }
        self.conn.send_packed_command(&self.pending)?;
        self.queued += self.pending_commands;
        self.pending.clear();
        self.pending_commands = 0;
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
