//! ParameterStatus: the settings the server reports to the client.

/// The value of a ParameterStatus frame for the parameter `name`.
fn parameter<'f>(frame: &'f [u8], name: &[u8]) -> Option<&'f str> {
    let value = frame.get(5..)?.strip_prefix(name)?.strip_prefix(b"\0")?;
    let end = value.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&value[..end]).ok()
}

/// The value of a ParameterStatus frame for `client_encoding`.
pub(crate) fn client_encoding(frame: &[u8]) -> Option<&str> {
    parameter(frame, b"client_encoding")
}

/// Whether a ParameterStatus frame for `standard_conforming_strings`
/// says it is on.
pub(crate) fn standard_strings(frame: &[u8]) -> Option<bool> {
    parameter(frame, b"standard_conforming_strings").map(|v| v != "off")
}
