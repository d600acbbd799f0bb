//! One container's deployment: a slot built and rendered before the host is touched, made the
//! live one, or taken off the host (see the `deploy` module doc).

pub(super) mod activate;
pub(super) mod bundle;
pub(super) mod exports;
pub(super) mod hostfs;
pub(super) mod readiness;
pub(super) mod slot;
pub(super) mod socket;
pub(super) mod teardown;
