//! What the two binaries of the `dc-host` package share: `dc-host` (the
//! operator CLI and host process) and `dc-worker` (the process of one run,
//! started by a `dc-host` supervisor). `startup` connects the database and
//! installs logging; `report` prints a fatal error.

pub mod startup;

/// The message of a fatal error: our error messages already embed their
/// cause, so only causes not yet said are added.
pub fn report(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
