//! Binds the state machine to the raft layer: Wazoo's openraft type configuration and
//! the `raft::Application` implementation of [`StateMachine`].

use crate::command::{Command, CommandOutput};
use crate::raft::Application;
use crate::state_machine::StateMachine;
use std::io::Cursor;

openraft::declare_raft_types!(
    /// Wazoo's raft types: log entries carry [`Command`]s (batches of operations), apply
    /// returns one [`CommandOutput`] per operation.
    pub TypeConfig:
        D = Command,
        R = Vec<CommandOutput>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

impl Application for StateMachine {
    type Command = Command;
    type Output = Vec<CommandOutput>;

    fn apply(&mut self, index: u64, cmd: &Command) -> Vec<CommandOutput> {
        StateMachine::apply(self, index, cmd)
    }

    fn apply_noop(&mut self, zxid: u64) {
        StateMachine::apply_noop(self, zxid)
    }

    fn take_changes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        StateMachine::take_changes(self)
    }

    fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        StateMachine::dump(self)
    }

    fn restore(&mut self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        StateMachine::restore(self, rows)
    }

    fn take_fatal(&mut self) -> Option<String> {
        StateMachine::take_fatal(self)
    }

    fn needs_prepare(app: &parking_lot::RwLock<Self>, cmd: &Command) -> bool {
        StateMachine::recipes_need_prepare(app, cmd)
    }

    fn prepare(app: &parking_lot::RwLock<Self>, cmd: &Command) {
        StateMachine::prepare_recipes(app, cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// openraft's storage test suite against our RocksDB stores wrapping the real
    /// state machine.
    #[test]
    fn openraft_storage_suite_with_the_znode_state_machine() {
        crate::raft::testing::run_openraft_suite::<TypeConfig, StateMachine, _>(StateMachine::new)
            .expect("openraft storage suite");
    }
}
