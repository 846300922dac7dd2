//! Error enums of the storage crate: one for I/O and integrity, one for rejected
//! appends (what the caller asked for is not allowed), so that the HTTP layer can
//! map each variant to one status code.

use uuid::Uuid;

/// The store cannot do its job: I/O failed, data is corrupt, or it is shut down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The embedded engine failed.
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    /// A file operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
    /// Stored data is not what the invariants say it must be.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A previous durable flush failed; the store refuses writes until restarted,
    /// when it rebuilds from what is on disk.
    #[error("store is failed after an earlier write error ({0}); restart to recover")]
    Poisoned(String),
    /// The writer has stopped (shutdown).
    #[error("store is shut down")]
    Closed,
}

/// Why an append was refused. Nothing of a refused request is stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The request itself is malformed (bad type name, duplicate ids in a batch…).
    #[error("{0}")]
    Invalid(String),
    /// The workflow does not exist.
    #[error("workflow {0} not found")]
    WorkflowNotFound(Uuid),
    /// The node named in the path does not exist.
    #[error("node {0} not found")]
    NodeNotFound(Uuid),
    /// A referenced node (parent, edge end, option) is unknown or in another workflow,
    /// or the edge breaks a rule of the data model.
    #[error("{0}")]
    Unprocessable(String),
    /// The id exists with a different body, the parent is no longer a leaf, the
    /// decision already has another chosen option, or the workflow is terminal.
    #[error("{0}")]
    Conflict(String),
    /// The store could not take the write.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
