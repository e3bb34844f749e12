//! The interface each direction's handler offers the relay.

use bytes::Bytes;

/// Looks at the messages of one direction as they pass.
pub(crate) trait Tap {
    /// Whether messages of type `tag` must be handed to the tap whole.
    fn wants(&self, tag: u8) -> bool;
    /// Offered each wanted message first: a tap that only needs to read it
    /// (to note it for the audit trail, say) does so and returns true, and
    /// the message is forwarded in place with the bytes around it, without
    /// being cut out of the buffer. False hands it to [`Tap::see`].
    fn look(&mut self, _tag: u8, _frame: &[u8]) -> bool {
        false
    }
    /// Receives a wanted message and pushes what is to be sent in its place.
    fn see(&mut self, tag: u8, frame: Bytes, out: &mut Vec<Bytes>);
    /// Told the type of every message as its header passes, wanted or
    /// not, before [`Tap::look`] or [`Tap::see`] gets it: for counting
    /// what passes without holding it back.
    fn passes(&mut self, _tag: u8) {}
    /// Told how many bytes each read from the sending peer brought.
    fn received(&mut self, _bytes: usize) {}
}
