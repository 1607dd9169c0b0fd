//! Test support: runs openraft's storage test suite against our stores with any
//! [`Application`], so the real state machine can be checked with the same builder:
//!
//! ```ignore
//! crate::raft::testing::run_openraft_suite::<TypeConfig, Tree, _>(Tree::default)?;
//! ```

use std::fmt::Debug;
use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use parking_lot::RwLock;
use tempfile::TempDir;

use super::db::io_err;
use super::{open_stores, AppTypeConfig, Application, LogStore, StateMachineStore};

/// Builds a fresh pair of stores in a new temporary directory for every suite test. The
/// guard is the `TempDir`, which keeps the directory alive as long as the stores.
pub(crate) struct TempDirStoreBuilder<F> {
    make_app: F,
}

impl<F> TempDirStoreBuilder<F> {
    pub(crate) fn new(make_app: F) -> Self {
        Self { make_app }
    }
}

impl<C, A, F> StoreBuilder<C, LogStore<C>, StateMachineStore<C, A>, TempDir>
    for TempDirStoreBuilder<F>
where
    A: Application,
    A::Output: Default,
    C: AppTypeConfig<A>,
    F: Fn() -> A + Send + Sync,
{
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<C>, StateMachineStore<C, A>), StorageError<u64>> {
        let dir =
            tempfile::tempdir().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        let app = Arc::new(RwLock::new((self.make_app)()));
        let (log, sm) = open_stores::<C, A>(dir.path(), app)?;
        Ok((dir, log, sm))
    }
}

/// Runs `openraft::testing::Suite::test_all` on stores wrapping applications made by
/// `make_app`. Call it from a plain `#[test]` (the suite starts its own runtimes).
pub(crate) fn run_openraft_suite<C, A, F>(make_app: F) -> Result<(), StorageError<u64>>
where
    A: Application,
    A::Command: Debug,
    A::Output: Default + Debug,
    C: AppTypeConfig<A>,
    F: Fn() -> A + Send + Sync,
{
    Suite::<C, LogStore<C>, StateMachineStore<C, A>, TempDirStoreBuilder<F>, TempDir>::test_all(
        TempDirStoreBuilder::new(make_app),
    )
}
