//! Runtime arguments: validated against the plugin's declared JSON schema before
//! anything starts, with every problem naming the field and what was expected
//! (the validator is `dc-args`, shared with the SDK's `TestHost`).

pub use dc_args::validate;
