pub mod hex;
pub mod lists;
pub mod qxfer;
pub mod thread_id;
