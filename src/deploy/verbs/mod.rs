//! What the CLI asks of `deploy`, one module per verb (see the `deploy` module doc).

pub(super) mod adhoc;
pub(super) mod apply;
pub(super) mod images;
pub(super) mod install;
pub(super) mod listing;
pub(super) mod pull;
pub(super) mod recovery;
pub(super) mod run;
pub(super) mod uninstall;
pub(super) mod update;
