//! Every record of an audit directory, in file order, without verifying.
//! Compressed and plain files are read alike.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::ReviewError;
use crate::audit::compress;
use crate::audit::format::{is_seal, list_files, AuditFile, Header};
use crate::audit::verify::Location;
use crate::audit::AuditRecord;

/// An iterator over the records of a directory's audit files, oldest file
/// first. Header and seal lines are skipped, and so is a last line without
/// its newline, which a writer has not finished. The first unreadable file
/// or line ends the iteration with an error.
pub(crate) struct Records {
    dir: PathBuf,
    files: std::vec::IntoIter<AuditFile>,
    current: Option<OpenFile>,
}

impl Records {
    /// Lists the audit files in `dir`; fails if there are none.
    pub(crate) fn open(dir: &Path) -> Result<Self, ReviewError> {
        let files = list_files(dir).map_err(|source| ReviewError::Read {
            path: dir.into(),
            source,
        })?;
        if files.is_empty() {
            return Err(ReviewError::NoFiles(dir.into()));
        }
        Ok(Self {
            dir: dir.into(),
            files: files.into_iter(),
            current: None,
        })
    }

    fn next_record(&mut self) -> Result<Option<AuditRecord>, ReviewError> {
        loop {
            let file = match &mut self.current {
                Some(file) => file,
                None => match self.files.next() {
                    Some(name) => self.current.insert(OpenFile::open(&self.dir, name)?),
                    None => return Ok(None),
                },
            };
            match file.next_record()? {
                Some(record) => return Ok(Some(record)),
                None => self.current = None,
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<AuditRecord, ReviewError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.next_record();
        if next.is_err() {
            self.files = Vec::new().into_iter();
            self.current = None;
        }
        next.transpose()
    }
}

/// A file being read, line by line.
struct OpenFile {
    name: String,
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line: usize,
    buffer: Vec<u8>,
}

impl OpenFile {
    fn open(dir: &Path, file: AuditFile) -> Result<Self, ReviewError> {
        let name = file.entry();
        let path = dir.join(&name);
        let reader = compress::open(dir, &file).map_err(|source| ReviewError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            name,
            path,
            reader,
            line: 0,
            buffer: Vec::new(),
        })
    }

    /// The next record of the file, `None` at its end.
    fn next_record(&mut self) -> Result<Option<AuditRecord>, ReviewError> {
        while self.next_line()? {
            let line = &self.buffer[..self.buffer.len() - 1];
            if self.line == 1 {
                serde_json::from_slice::<Header>(line).map_err(|_| ReviewError::NoHeader {
                    at: self.location(),
                })?;
            } else if !is_seal(line) {
                return serde_json::from_slice(line).map(Some).map_err(|source| {
                    ReviewError::Unparseable {
                        at: self.location(),
                        source,
                    }
                });
            }
        }
        Ok(None)
    }

    /// Reads the next complete line into the buffer; `false` at the end
    /// of the file or before a last line without its newline.
    fn next_line(&mut self) -> Result<bool, ReviewError> {
        self.buffer.clear();
        self.reader
            .read_until(b'\n', &mut self.buffer)
            .map_err(|source| ReviewError::Read {
                path: self.path.clone(),
                source,
            })?;
        self.line += 1;
        Ok(self.buffer.last() == Some(&b'\n'))
    }

    fn location(&self) -> Location {
        Location {
            file: self.name.clone(),
            line: self.line,
        }
    }
}
