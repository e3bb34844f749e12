//! COPY data as it crosses the wire: the text and CSV formats and the
//! binary format.

pub(crate) mod binary;
pub(crate) mod options;
pub(crate) mod text;
