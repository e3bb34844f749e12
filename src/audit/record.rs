//! What one audit line says: the record types, in their JSON form.
//!
//! Every field is metadata about an access (who, when, from where, which
//! tables and columns, how many rows, what was decided) and none can hold
//! a protected value, a bind parameter or a literal: names are
//! identifiers, counts are integers, decisions and outcomes are closed
//! sets, and the statement is the text normalized with every constant
//! replaced by a placeholder (see [`NormalizedStatement`]).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::protect::crypto::Mode;

/// A point in time, written as RFC 3339 UTC with microseconds:
/// `2026-11-25T10:00:00.123456Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_micros(self.0).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// One audit record. The JSON object carries its kind in `"event"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord {
    /// A client opened a connection.
    Connect {
        time: Timestamp,
        #[serde(flatten)]
        peer: Peer,
    },
    /// A client authenticated, or failed to.
    Authentication {
        time: Timestamp,
        #[serde(flatten)]
        peer: Peer,
        #[serde(flatten)]
        login: Login,
        outcome: Outcome,
    },
    /// A connection ended.
    Disconnect {
        time: Timestamp,
        #[serde(flatten)]
        peer: Peer,
        /// Statements run on the connection.
        statements: u64,
        /// Rows returned or affected, over all statements.
        rows: u64,
    },
    /// A statement ran (or failed).
    Statement(Box<StatementRecord>),
    /// Access beyond a bulk threshold.
    Alert(AlertRecord),
    /// Records the log could not take: it says so in the chain rather
    /// than leave a silent hole.
    Gap(GapRecord),
    /// The run before this one ended without sealing its log: killed,
    /// crashed, or its log down at shutdown. Written first by the next
    /// start.
    UncleanShutdown(UncleanShutdownRecord),
    /// pgveil was asked (SIGHUP) to load its policy and keyring again.
    Reload {
        time: Timestamp,
        /// `ok`: sessions starting from then on use the new policy; an
        /// error: the policy in force stays.
        outcome: Outcome,
        /// Why it was refused; absent when it was applied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// `pgveil migrate` brought a column's stored values in line with the
    /// policy and keyring, or back to plaintext.
    Migration(Box<MigrationRecord>),
    /// A statement read plaintext rows of a column under an approval
    /// (`pgveil approve`).
    ApprovalUse(Box<ApprovalUseRecord>),
}

/// Which connection, from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// pgveil's id of the connection, unique while it runs.
    pub connection: u64,
    /// The client's address, `IP:PORT`.
    pub client: Arc<str>,
}

/// The database and role a client logs in as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The database the client connected to.
    pub database: Arc<str>,
    /// The user the client logged in as.
    pub role: Arc<str>,
}

/// Everything known about the session that ran a statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(flatten)]
    pub peer: Peer,
    #[serde(flatten)]
    pub login: Login,
    /// The person or service the application acts for, as the session
    /// declared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why the session accesses the data, as it declared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The ticket (business need) the session declared its access is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// One statement: what it touched, what pgveil decided, how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRecord {
    pub time: Timestamp,
    #[serde(flatten)]
    pub session: Session,
    /// The statement's kind in lowercase, such as `select` or `insert`.
    pub kind: Arc<str>,
    pub statement: NormalizedStatement,
    /// Tables touched, schema-qualified.
    pub tables: Arc<[String]>,
    /// Each protected column read or written.
    pub columns: Vec<ColumnAccess>,
    /// Rows returned or affected.
    pub rows: u64,
    pub outcome: Outcome,
    pub duration_us: u64,
}

/// Statement text in which every constant is a placeholder (`$1`, `$2`…),
/// as `pg_query::normalize` returns it, with comments and the constants it
/// leaves removed (`trail::redact`). It is the caller's duty to pass only
/// such text: this type cannot tell a literal from a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NormalizedStatement(Arc<str>);

impl NormalizedStatement {
    /// Wraps the output of `pg_query::normalize`.
    pub(crate) fn from_normalized(text: String) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl StatementRecord {
    /// The policy roles that decided its protected columns, distinct and
    /// sorted (`default` among them when a column's default did); empty
    /// for a record written before pgveil recorded them.
    pub fn policy_roles(&self) -> std::collections::BTreeSet<&str> {
        self.columns
            .iter()
            .filter_map(|c| c.policy_role.as_deref())
            .collect()
    }
}

/// A protected column a statement read or wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnAccess {
    /// `schema.table.column`.
    pub column: String,
    pub access: Access,
    pub decision: Decision,
    /// The policy role whose `reveal` rule applied to the session for this
    /// column (one the login user is a member of, or the user itself), or
    /// `default` when no rule names one of its roles and the column's
    /// `default` decided. For a read outside the column's purposes it is
    /// still the role whose rule applied, though the decision fell to the
    /// default; for a write (encrypted for every role) the role the
    /// session reads the column as. Absent in records written before
    /// pgveil recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_role: Option<String>,
    /// A read of values not stored encrypted (written before pgveil or
    /// around it, or shaped like ciphertext that does not decrypt), which
    /// the decision was applied to as the plaintext they may be.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unencrypted: bool,
}

/// Whether a column was read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// As the log writes it.
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// What pgveil did with a protected column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Decrypted and shown.
    Plaintext,
    /// Shown masked.
    Masked,
    /// Replaced by its pseudonym.
    Pseudonym,
    /// Replaced by NULL.
    Null,
    /// The statement was refused.
    Denied,
    /// Left (or written) encrypted.
    Encrypted,
}

impl Decision {
    /// As the log writes it.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Plaintext => "plaintext",
            Decision::Masked => "masked",
            Decision::Pseudonym => "pseudonym",
            Decision::Null => "null",
            Decision::Denied => "denied",
            Decision::Encrypted => "encrypted",
        }
    }
}

/// How an attempt ended: `"ok"`, or the SQLSTATE of the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error(SqlState),
}

impl Outcome {
    /// As the log writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Ok => OUTCOME_OK,
            Outcome::Error(code) => code.as_str(),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == OUTCOME_OK {
            return Ok(Outcome::Ok);
        }
        SqlState::new(&text)
            .map(Outcome::Error)
            .map_err(serde::de::Error::custom)
    }
}

const OUTCOME_OK: &str = "ok";

/// A five-character SQLSTATE such as `42501`: digits and uppercase letters
/// only, so it cannot carry anything else.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SqlState([u8; 5]);

/// A string that is not a SQLSTATE.
#[derive(Debug, Error)]
#[error("a SQLSTATE is five digits or uppercase letters")]
pub struct InvalidSqlState;

impl SqlState {
    pub fn new(code: &str) -> Result<Self, InvalidSqlState> {
        let bytes: [u8; 5] = code.as_bytes().try_into().map_err(|_| InvalidSqlState)?;
        if bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            Ok(Self(bytes))
        } else {
            Err(InvalidSqlState)
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("checked ASCII in new")
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One statement took a role or actor over the bulk threshold of one or
/// more protected columns within a window: one alert per statement, which
/// lists every column it took over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub time: Timestamp,
    /// The login role.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The session whose statement crossed the threshold; absent in logs
    /// written before alerts named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// The columns over the threshold, `schema.table.column`. Older logs
    /// wrote one alert per column, as `"column": "..."`; both are read.
    #[serde(alias = "column", deserialize_with = "one_or_many")]
    pub columns: Vec<String>,
    /// Rows read within the window: the most of any of the columns.
    pub rows: u64,
    /// The threshold that was exceeded.
    pub threshold: u64,
    /// The window's length in seconds.
    pub window_secs: u64,
}

/// A list of names, or one name alone.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    })
}

/// Rows of an approval one statement used: which approval, for which
/// session, column and ticket, how many, and how many it has left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalUseRecord {
    pub time: Timestamp,
    #[serde(flatten)]
    pub peer: Peer,
    #[serde(flatten)]
    pub login: Login,
    /// The approval's id.
    pub approval: String,
    /// The policy role it was written for.
    pub policy_role: String,
    /// `schema.table.column`.
    pub column: String,
    /// The ticket the session declared, the approval's.
    pub ticket: String,
    /// Plaintext rows the statement read under it.
    pub rows: u64,
    /// Rows it has left after them.
    pub rows_left: u64,
}

/// What `pgveil migrate` did to one column, for one action, in one
/// table's pass: counts, key versions and names, never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub time: Timestamp,
    /// The database migrated and the role `migrate` logged in as.
    #[serde(flatten)]
    pub login: Login,
    /// `schema.table`.
    pub table: String,
    /// `schema.table.column`.
    pub column: String,
    pub action: MigrationAction,
    /// The key domain of the values.
    pub domain: String,
    /// Rows whose value was changed.
    pub rows: u64,
    /// The key versions the changed values were under before (re-encrypt,
    /// decrypt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_versions: Vec<u32>,
    /// The key version the values are under now (encrypt, re-encrypt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<u32>,
    /// The mode the values are encrypted in now (encrypt, re-encrypt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Values shaped like ciphertext that do not decrypt (forged, damaged,
    /// under a key the keyring lacks): left as they are.
    #[serde(default)]
    pub undecryptable: u64,
    /// Rows the database refused to take the new value of (a constraint,
    /// a type too short), left as they are.
    #[serde(default)]
    pub refused: u64,
    /// Whether the pass was resumed after an interruption: the counts
    /// include what the interrupted run committed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    /// `ok` when every value of the column now matches the policy;
    /// `XX001` (data_corrupted) with undecryptable values, another
    /// SQLSTATE when the database refused rows or the pass was cut short.
    pub outcome: Outcome,
}

/// What `pgveil migrate` did to a column's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationAction {
    /// Plaintext encrypted.
    Encrypt,
    /// Ciphertext under an old key version, or in the other mode,
    /// encrypted again under the current key in the policy's mode.
    ReEncrypt,
    /// Ciphertext of a column taken out of the policy decrypted
    /// (`--decrypt`).
    Decrypt,
}

impl MigrationAction {
    /// As the log writes it.
    pub fn name(self) -> &'static str {
        match self {
            MigrationAction::Encrypt => "encrypt",
            MigrationAction::ReEncrypt => "re_encrypt",
            MigrationAction::Decrypt => "decrypt",
        }
    }
}

/// Records that were never written. A gap record is written with the
/// first batch after records were lost, and counts every record lost since
/// the previous gap record (or since pgveil started).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRecord {
    pub time: Timestamp,
    /// How many records were not written.
    pub lost: u64,
    pub cause: GapCause,
}

/// Why records were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// The queue to the writer was full.
    QueueFull,
    /// The writer could not write (a full disk, an I/O error) for a while.
    WriteFailed,
}

impl GapCause {
    /// As the log writes it.
    pub fn name(self) -> &'static str {
        match self {
            GapCause::QueueFull => "queue_full",
            GapCause::WriteFailed => "write_failed",
        }
    }
}

/// The previous run ended without a clean shutdown (a `kill -9`, a crash,
/// a power cut, or a log still down when it stopped), which the next
/// start finds as a newest file left open: it seals that file as
/// recovered (cut after its last complete record) and writes this record
/// first.
///
/// What the previous run wrote is known from that file's seq: its records
/// `first_seq..=last_seq` reached the file (`last_seq` is the last record
/// of the whole chain before this one). What it had not written yet is
/// not: records still queued in memory for the writer (a few
/// milliseconds' worth, or more under load or while the log was down) die
/// with the process and leave no trace, so their number cannot be known;
/// a record cut off as it was being written (`torn`) is one of them.
/// `pgveil audit verify` reports the log as INCOMPLETE at this record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncleanShutdownRecord {
    pub time: Timestamp,
    /// The file the previous run left open, sealed as recovered.
    pub file: String,
    /// The first record of that file (`last_seq + 1` if it held none).
    pub first_seq: u64,
    /// The last complete record of that file.
    pub last_seq: u64,
    /// Whether the file ended in a partly written record, cut off: one
    /// record known to be lost, besides those that were still queued.
    pub torn: bool,
}

impl UncleanShutdownRecord {
    /// The records that file holds.
    pub fn records(&self) -> u64 {
        (self.last_seq + 1).saturating_sub(self.first_seq)
    }
}

#[cfg(test)]
pub(super) mod tests;
