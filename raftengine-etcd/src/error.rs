//! The one place this backend builds `raftengine::Error::Internal`, so each
//! such error names this engine the same way.

use raftengine::Error;

/// An internal failure caused by `source`.
pub(crate) fn internal(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Internal {
        engine: crate::ENGINE_TYPE,
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

/// An internal failure with nothing underneath it to report.
pub(crate) fn internal_bare(message: impl Into<String>) -> Error {
    Error::Internal {
        engine: crate::ENGINE_TYPE,
        message: message.into(),
        source: None,
    }
}
