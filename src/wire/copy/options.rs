//! The options of a COPY data stream, as the COPY statement set them.

/// The format of a COPY data stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    Binary,
}

/// The options of a COPY data stream, with PostgreSQL's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    /// Tab in text format, comma in CSV.
    pub delimiter: String,
    /// `\N` in text format, the empty string in CSV.
    pub null: String,
    /// CSV only: `"` by default.
    pub quote: String,
    /// CSV only: the quote by default.
    pub escape: String,
    /// Whether the first line is a header (`HEADER` or `HEADER MATCH`).
    pub header: bool,
    /// CSV, COPY FROM: columns whose unquoted NULL string is a value.
    pub force_not_null: ColumnSet,
    /// CSV, COPY FROM: columns whose quoted NULL string is NULL.
    pub force_null: ColumnSet,
    /// The `ENCODING` option: the data's encoding, instead of the
    /// client's.
    pub encoding: Option<String>,
    /// COPY TO of a table: its protected columns by position in the data
    /// (empty when none, or for a query), so that a value stored there
    /// unencrypted is revealed by its column's rule.
    pub protected: Vec<Option<CopyField>>,
}

/// A protected column of a COPY TO's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyField {
    pub schema: String,
    pub table: String,
    pub column: String,
    /// The column is `bytea`.
    pub bytea: bool,
}

/// The columns a `FORCE_NOT_NULL` or `FORCE_NULL` option names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ColumnSet {
    #[default]
    None,
    /// `*`
    All,
    Named(Vec<String>),
}

impl ColumnSet {
    /// Whether the set holds the column named `column`.
    pub fn contains(&self, column: &str) -> bool {
        match self {
            ColumnSet::None => false,
            ColumnSet::All => true,
            ColumnSet::Named(names) => names.iter().any(|name| name == column),
        }
    }
}

impl CopyOptions {
    /// PostgreSQL's defaults for a stream in this format.
    pub fn of(format: CopyFormat) -> Self {
        let csv = format == CopyFormat::Csv;
        CopyOptions {
            format,
            delimiter: if csv { "," } else { "\t" }.into(),
            null: if csv { "" } else { "\\N" }.into(),
            quote: "\"".into(),
            escape: "\"".into(),
            header: false,
            force_not_null: ColumnSet::None,
            force_null: ColumnSet::None,
            encoding: None,
            protected: Vec::new(),
        }
    }
}
