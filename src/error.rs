//! The one public error type of quiverdb.
//!
//! Every fallible public function returns [`Result<T>`]. Bad input from the caller is
//! [`Error::InvalidInput`] or [`Error::InvalidParameter`]; bytes on disk that do not decode are
//! [`Error::Corruption`] (kept apart from [`Error::Io`], because a corrupt file must never be
//! retried as if the disk were merely busy).

use std::path::PathBuf;

/// Shorthand for `std::result::Result<T, quiverdb::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in quiverdb.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A caller-supplied vector, matrix or document is malformed (wrong dimension, NaN, empty, ragged).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A configuration parameter is out of its allowed range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name as the user sees it (e.g. `k_sim`).
        name: &'static str,
        /// Why the value was refused, including the allowed range.
        reason: String,
    },

    /// Bytes read from a file do not decode: wrong magic, bad checksum, offset past the end, ...
    #[error("corruption in {}: at byte {offset}: {what}", file.display())]
    Corruption {
        /// The file whose bytes are bad.
        file: PathBuf,
        /// Byte offset in the file where the problem was detected.
        offset: u64,
        /// What was expected and what was found.
        what: String,
    },

    /// An operating-system I/O error, with the path it concerns.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the failed operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The path holds no collection (no catalog), or what is there is not a quiverdb collection.
    #[error("no collection at {}: {reason}", path.display())]
    NotACollection {
        /// The directory given to `open`.
        path: PathBuf,
        /// What was missing or wrong.
        reason: String,
    },

    /// `create` was asked to create a collection where one (or other files) already exist.
    #[error("cannot create a collection at {}: the directory exists and is not empty", path.display())]
    AlreadyExists {
        /// The directory given to `create`.
        path: PathBuf,
    },

    /// Another handle (in this or another process) has the collection open for writing.
    #[error("collection {} is locked by another writer (lock file {})", path.display(), lock_file.display())]
    Locked {
        /// The collection directory.
        path: PathBuf,
        /// The lock file held by the other writer.
        lock_file: PathBuf,
    },

    /// An earlier write or fsync of this handle failed; the on-disk state past that point is
    /// unknown, so the handle refuses further writes. Reopen the collection (recovery restores
    /// the last durable state).
    #[error("the collection refuses writes after an earlier failure ({reason}); reopen it to recover")]
    Poisoned {
        /// The first failure.
        reason: String,
    },

    /// `insert` of an id the collection already holds (use `upsert` to replace it).
    #[error("document id {id} already exists (upsert replaces a document)")]
    IdExists {
        /// The id.
        id: u64,
    },

    /// The handle was closed.
    #[error("the collection handle is closed")]
    Closed,

    /// The RocksDB catalog reported an error.
    #[error("catalog error in {}: {message}", path.display())]
    Catalog {
        /// The catalog directory.
        path: PathBuf,
        /// RocksDB's message.
        message: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Builds an [`Error::Corruption`] for `file` at byte `offset`.
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Error::Corruption { file: file.into(), offset, what: what.into() }
    }

    pub(crate) fn invalid_param(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter { name, reason: reason.into() }
    }
}

/// The sticky first failure of a component that must refuse further work after a failed write or
/// fsync (the collection handle, the WAL): once set, every [`Poison::check`] fails with
/// [`Error::Poisoned`] naming the first failure.
#[derive(Debug, Default)]
pub(crate) struct Poison(parking_lot::Mutex<Option<String>>);

impl Poison {
    /// `Err(Poisoned)` once a failure was recorded.
    pub(crate) fn check(&self) -> Result<()> {
        match &*self.0.lock() {
            Some(reason) => Err(Error::Poisoned { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Records `err` if it is the first failure, and returns it.
    pub(crate) fn set(&self, err: Error) -> Error {
        let mut first = self.0.lock();
        if first.is_none() {
            *first = Some(err.to_string());
        }
        err
    }

    /// The first failure, if any.
    pub(crate) fn reason(&self) -> Option<String> {
        self.0.lock().clone()
    }

    /// Whether a failure was recorded.
    pub(crate) fn is_set(&self) -> bool {
        self.0.lock().is_some()
    }
}
