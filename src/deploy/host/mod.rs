//! Where everything lives on the host, and what sysctr knows of it (see the `deploy` module doc).

pub(super) mod facts;
pub(super) mod layout;
pub(super) mod reproducible;
