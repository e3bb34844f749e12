//! Describe: a client asks for the parameters and rows of a prepared
//! statement, or the rows of a portal.

use super::body::target_and_name;

/// A Describe message, read.
pub(crate) struct DescribeMessage<'f> {
    /// What it describes: [`crate::wire::tags::target::STATEMENT`], or any
    /// other byte for a portal.
    pub(crate) target: u8,
    /// The statement or portal name, without its NUL.
    pub(crate) name: &'f [u8],
}

impl<'f> DescribeMessage<'f> {
    /// A Describe's target byte, whatever it is, and the name up to the
    /// first NUL, whatever follows.
    pub(crate) fn read_lenient(frame: &'f [u8]) -> Option<Self> {
        let (target, name) = target_and_name(frame)?;
        Some(Self { target, name })
    }
}
