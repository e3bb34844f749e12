//! The message type bytes of the protocol, named, one table per direction:
//! the same byte means different messages in each (`b'C'` is Close from a
//! client and CommandComplete from a server), so code names the direction
//! it reads.

/// Messages a client (frontend) sends.
pub mod frontend {
    /// Bind: a portal from a prepared statement and parameter values.
    pub const BIND: u8 = b'B';
    /// Close a prepared statement or portal.
    pub const CLOSE: u8 = b'C';
    /// CopyData: a chunk of COPY FROM STDIN data.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone: the end of COPY FROM STDIN data.
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail: the client aborts COPY FROM STDIN.
    pub const COPY_FAIL: u8 = b'f';
    /// Describe a prepared statement or portal.
    pub const DESCRIBE: u8 = b'D';
    /// Execute a portal.
    pub const EXECUTE: u8 = b'E';
    /// Flush: send what is pending.
    pub const FLUSH: u8 = b'H';
    /// FunctionCall: the fast-path function call.
    pub const FUNCTION_CALL: u8 = b'F';
    /// Parse: prepare a statement.
    pub const PARSE: u8 = b'P';
    /// PasswordMessage, SASLInitialResponse and SASLResponse.
    pub const PASSWORD: u8 = b'p';
    /// Query: the simple query protocol.
    pub const QUERY: u8 = b'Q';
    /// Sync: the end of an extended-protocol batch.
    pub const SYNC: u8 = b'S';
    /// Terminate: the client leaves.
    pub const TERMINATE: u8 = b'X';
}

/// Messages a server (backend) sends.
pub mod backend {
    /// NotificationResponse (`NOTIFY`).
    pub const NOTIFICATION: u8 = b'A';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// CommandComplete: a statement's tag.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// CopyData: a chunk of COPY TO STDOUT data.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone: the end of COPY TO STDOUT data.
    pub const COPY_DONE: u8 = b'c';
    /// CopyInResponse: COPY FROM STDIN starts.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse: COPY TO STDOUT starts.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// CopyBothResponse: streaming replication starts.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// DataRow: one row.
    pub const DATA_ROW: u8 = b'D';
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY: u8 = b'I';
    /// ErrorResponse.
    pub const ERROR: u8 = b'E';
    /// FunctionCallResponse.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// BackendKeyData: the key to cancel this session's queries.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL: u8 = b'v';
    /// NoData: a statement returns no rows.
    pub const NO_DATA: u8 = b'n';
    /// NoticeResponse.
    pub const NOTICE: u8 = b'N';
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// ParameterStatus: a setting the client is told about.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// PortalSuspended: Execute's row limit was reached.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// Authentication requests and their outcome.
    pub const AUTHENTICATION: u8 = b'R';
    /// RowDescription: the columns of the rows that follow.
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// What a Describe or Close names: its first body byte.
pub mod target {
    /// A prepared statement.
    pub const STATEMENT: u8 = b'S';
    /// A portal.
    pub const PORTAL: u8 = b'P';
}

/// The field codes of an ErrorResponse or NoticeResponse.
pub mod error_field {
    /// Severity, localized.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized.
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// The SQLSTATE.
    pub const CODE: u8 = b'C';
    /// The primary message.
    pub const MESSAGE: u8 = b'M';
    /// Where the error happened (a PL/pgSQL context).
    pub const WHERE: u8 = b'W';
    /// The schema of the object concerned (pgveil's refusals carry their
    /// marker here).
    pub const SCHEMA: u8 = b's';
    /// The table concerned.
    pub const TABLE: u8 = b't';
    /// The column concerned.
    pub const COLUMN: u8 = b'c';
    /// The data type concerned.
    pub const DATA_TYPE: u8 = b'd';
    /// The constraint whose violation this is.
    pub const CONSTRAINT: u8 = b'n';
}

/// What a ReadyForQuery says of the transaction.
pub mod transaction {
    /// Not in a transaction block.
    pub const IDLE: u8 = b'I';
    /// In a transaction block.
    pub const IN_BLOCK: u8 = b'T';
    /// In a failed transaction block.
    pub const FAILED: u8 = b'E';
}
