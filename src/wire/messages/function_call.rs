//! FunctionCall: a client calls a function by its OID (the fast-path
//! protocol).

/// The OID of the function a FunctionCall frame calls.
pub(crate) fn function_oid(frame: &[u8]) -> Option<u32> {
    frame
        .get(5..9)
        .map(|oid| u32::from_be_bytes([oid[0], oid[1], oid[2], oid[3]]))
}
