//! Every SQLSTATE pgveil raises itself, in one table, named as in
//! PostgreSQL's errcodes (Appendix A of its manual). Errors the server
//! raises are relayed with the server's own code.

/// `feature_not_supported`: a construct pgveil cannot protect (a
/// server-side COPY file, a computation on a protected value).
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `sqlclient_unable_to_establish_sqlconnection`: the upstream server
/// cannot be reached.
pub const CANNOT_CONNECT: &str = "08001";
/// `connection_failure`: the upstream connection broke.
pub const CONNECTION_FAILURE: &str = "08006";
/// `protocol_violation`: a malformed message.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `character_not_in_repertoire`: text pgveil cannot read in the
/// session's encoding.
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
/// `invalid_text_representation`: a value that cannot be what its column
/// holds.
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// `bad_copy_file_format`: COPY data pgveil cannot read.
pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
/// `invalid_authorization_specification`: a startup pgveil refuses.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// `insufficient_privilege`: the policy denies the reader a column.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `syntax_error`: SQL pgveil cannot parse.
pub const SYNTAX_ERROR: &str = "42601";
/// `datatype_mismatch`: a protected column whose type cannot hold
/// ciphertext.
pub const DATATYPE_MISMATCH: &str = "42804";
/// `program_limit_exceeded`: a value or line over pgveil's limits.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// `too_many_connections`: a client beyond `max_client_conn`.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `admin_shutdown`: pgveil is shutting down.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `io_error`: the audit log cannot record, so nothing is revealed.
pub const IO_ERROR: &str = "58030";
/// `config_file_error`: a configuration or policy that cannot be loaded
/// (a refused reload, in the audit log).
pub const CONFIG_FILE_ERROR: &str = "F0000";
/// `internal_error`: pgveil cannot be sure of what it would do.
pub const INTERNAL_ERROR: &str = "XX000";

/// Every code above, for what counts pgveil's errors by SQLSTATE.
pub const ALL: &[&str] = &[
    FEATURE_NOT_SUPPORTED,
    CANNOT_CONNECT,
    CONNECTION_FAILURE,
    PROTOCOL_VIOLATION,
    CHARACTER_NOT_IN_REPERTOIRE,
    INVALID_TEXT_REPRESENTATION,
    BAD_COPY_FILE_FORMAT,
    INVALID_AUTHORIZATION,
    INSUFFICIENT_PRIVILEGE,
    SYNTAX_ERROR,
    DATATYPE_MISMATCH,
    PROGRAM_LIMIT_EXCEEDED,
    TOO_MANY_CONNECTIONS,
    ADMIN_SHUTDOWN,
    IO_ERROR,
    CONFIG_FILE_ERROR,
    INTERNAL_ERROR,
];

#[cfg(test)]
mod tests {
    #[test]
    fn all_lists_every_code() {
        let table = include_str!("sqlstate.rs");
        let codes = table.matches("\npub const ").count() - 1;
        assert_eq!(super::ALL.len(), codes);
    }
}
