//! COPY FROM STDIN data as the client tap passes it on: CopyData of a
//! COPY into a protected table encrypted (`copy_in`), CopyDone and
//! CopyFail noted, the COPY failed when its data cannot be encrypted.

use bytes::Bytes;
use tracing::info;

use super::copy_in::{CopyEncryptor, CopyError};
use super::tap::{ClientTap, CopyState};
use crate::protect::protection::Protection;
use crate::wire::messages::body::{body_of, cstring};
use crate::wire::reply;
use crate::wire::tags::frontend;

impl<'a> ClientTap<'a> {
    /// CopyData, CopyDone or CopyFail. Only those of a COPY into a
    /// protected table are changed; the end of every COPY's data is noted
    /// for the declarations.
    pub(super) fn copy_message(
        &mut self,
        veil: &'a Protection,
        tag: u8,
        frame: Bytes,
        out: &mut Vec<Bytes>,
    ) {
        if let Some(CopyState::Waiting(copy)) = &self.copy {
            let encoding = self.shared.encoding();
            self.copy = Some(
                match CopyEncryptor::new(copy, &veil.policy, veil, encoding) {
                    Ok(encryptor) => CopyState::Encrypting(encryptor),
                    Err(e) => {
                        self.fail_copy(&e, out);
                        CopyState::Failed
                    }
                },
            );
        }
        let encryptor = match &mut self.copy {
            None => {
                self.copy_ended(tag);
                return out.push(frame);
            }
            Some(CopyState::Encrypting(encryptor)) => encryptor,
            Some(_) => {
                // Failed: the server is no longer reading; drop the data.
                if tag != frontend::COPY_DATA {
                    self.copy = None;
                }
                return;
            }
        };
        let result = match tag {
            frontend::COPY_DATA => encryptor.feed(body_of(&frame)),
            frontend::COPY_DONE => encryptor.finish(),
            _ => {
                self.copy = None;
                self.copy_ended(tag);
                return out.push(frame);
            }
        };
        match result {
            Ok(data) => {
                if !data.is_empty() {
                    out.push(reply::frame_of(frontend::COPY_DATA, &data));
                }
                if tag == frontend::COPY_DONE {
                    self.copy = None;
                    self.copy_ended(tag);
                    out.push(frame);
                }
            }
            Err(e) => {
                self.fail_copy(&e, out);
                self.copy = if tag == frontend::COPY_DONE {
                    None
                } else {
                    Some(CopyState::Failed)
                };
            }
        }
    }

    /// Sends CopyFail: the server aborts the COPY with pgveil's reason.
    fn fail_copy(&self, e: &CopyError, out: &mut Vec<Bytes>) {
        info!(sqlstate = e.sqlstate, "COPY refused: {}", e.message);
        out.push(reply::frame_of(frontend::COPY_FAIL, &cstring(&e.message)));
        self.copy_ended(frontend::COPY_FAIL);
    }

    /// Notes a CopyDone or CopyFail sent to the server.
    fn copy_ended(&self, tag: u8) {
        if tag != frontend::COPY_DATA {
            self.shared.ledger().copy_ended();
            if let Some(trail) = self.trail {
                trail.copy_ended();
            }
        }
    }
}
