//! COPY data as it crosses the wire: the text and CSV formats and the
//! binary format.

pub mod binary;
pub mod options;
pub mod text;
