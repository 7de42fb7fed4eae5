//! The command message: versioned JSON with the stored enum names, e.g.
//! `{"version":1,"id":"…","app_id":"…","command":"START","requested_by":"…","requested_at":"2026-11-26T19:00:00Z"}`.
//! Parsing refuses an unknown version or command and a missing or mistyped
//! field with a message naming the field; fields this version does not know
//! are ignored, so a later minor addition does not dead-letter old hosts'
//! messages.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use dc_core::enums::CmdName;
use serde_json::{Map, Value};

/// The message version this build writes and reads.
pub const MESSAGE_VERSION: u64 = 1;

/// The content type every command message carries.
pub const CONTENT_TYPE: &str = "application/json";

/// One operator command for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMessage {
    /// Unique per message (`dc-host` writes a UUID v4); also the AMQP `message_id`.
    pub id: String,
    /// The app: its id or `group/parent/name`.
    pub app_id: String,
    /// What to do.
    pub command: CmdName,
    /// Who asked (`dc-host` writes `user@host`).
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// True when the sender already queued the command in the database (the
    /// CLI does): the consumer then only wakes the manager, so a message
    /// delivered after a host already claimed the command never runs it twice.
    pub recorded: bool,
}

/// Why a message was refused; it is dead-lettered, never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not a JSON object.
    #[error("the body is not a JSON object ({0}); send {{\"version\":1,\"id\":…,\"app_id\":…,\"command\":…}}")]
    NotJson(String),
    /// A required field is absent.
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    /// A field has the wrong type or value.
    #[error("field `{field}`: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> MessageError {
    MessageError::Invalid { field, problem: problem.into() }
}

fn text<'a>(o: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, MessageError> {
    match o.get(field) {
        None | Some(Value::Null) => Err(MessageError::Missing(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(invalid(field, "is empty")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(field, format!("expected a string, got {other}"))),
    }
}

impl CommandMessage {
    /// A new message from this host (`recorded`: the command is already in the database).
    pub fn new(app_id: &str, command: CmdName, requested_by: &str, recorded: bool) -> CommandMessage {
        CommandMessage {
            id: uuid::Uuid::new_v4().to_string(),
            app_id: app_id.to_string(),
            command,
            requested_by: requested_by.to_string(),
            requested_at: Utc::now(),
            recorded,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::json!({
            "version": MESSAGE_VERSION,
            "id": self.id,
            "app_id": self.app_id,
            "command": self.command.as_str(),
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.to_rfc3339(),
        });
        if self.recorded {
            v["recorded"] = Value::Bool(true);
        }
        v.to_string().into_bytes()
    }

    /// Parses a body, naming the field that is wrong.
    pub fn parse(body: &[u8]) -> Result<CommandMessage, MessageError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
        let Value::Object(o) = v else {
            return Err(MessageError::NotJson(format!("got {}", kind_of(&v))));
        };
        match o.get("version") {
            None | Some(Value::Null) => return Err(MessageError::Missing("version")),
            Some(Value::Number(n)) if n.as_u64() == Some(MESSAGE_VERSION) => {}
            Some(other) => {
                return Err(invalid(
                    "version",
                    format!("unknown version {other}; this host reads version {MESSAGE_VERSION}"),
                ));
            }
        }
        let id = text(&o, "id")?.to_string();
        let app_id = text(&o, "app_id")?.to_string();
        let name = text(&o, "command")?;
        let command = CmdName::from_str(name).map_err(|_| {
            invalid("command", format!("unknown command {name:?}; use one of START, STOP, RESTART, ENABLE, DISABLE"))
        })?;
        let requested_by = text(&o, "requested_by")?.to_string();
        let at = text(&o, "requested_at")?;
        let requested_at = DateTime::parse_from_rfc3339(at)
            .map_err(|e| invalid("requested_at", format!("{at:?} is not an RFC 3339 time ({e})")))?
            .with_timezone(&Utc);
        let recorded = match o.get("recorded") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(invalid("recorded", format!("expected true or false, got {other}"))),
        };
        Ok(CommandMessage { id, app_id, command, requested_by, requested_at, recorded })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"version": 1, "id": "6d1f0c1e-0000-4000-8000-000000000001", "app_id": "a/b/c",
               "command": "START", "requested_by": "ops@host", "requested_at": "2026-11-26T19:00:00+01:00"})
    }

    fn parse(v: &Value) -> Result<CommandMessage, MessageError> {
        CommandMessage::parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_message_round_trips() {
        let m = CommandMessage::new("a/b/c", CmdName::Restart, "ops@host", true);
        assert_eq!(CommandMessage::parse(&m.to_json()), Ok(m.clone()));
        let p = parse(&good()).expect("parses");
        assert_eq!((p.command, p.recorded), (CmdName::Start, false));
        assert_eq!(p.requested_at.to_rfc3339(), "2026-11-26T18:00:00+00:00");
    }

    #[test]
    fn an_unknown_version_is_refused_naming_the_field() {
        let mut v = good();
        v["version"] = json!(2);
        let e = parse(&v).expect_err("version 2").to_string();
        assert!(
            e.contains("field `version`") && e.contains("unknown version 2") && e.contains("reads version 1"),
            "{e}"
        );
        v.as_object_mut().expect("object").remove("version");
        assert_eq!(parse(&v), Err(MessageError::Missing("version")));
        v["version"] = json!("1");
        assert!(parse(&v).expect_err("a string").to_string().contains("field `version`"));
    }

    #[test]
    fn an_unknown_command_is_refused_naming_the_field() {
        let mut v = good();
        v["command"] = json!("JUMP");
        let e = parse(&v).expect_err("JUMP").to_string();
        assert!(e.contains("field `command`") && e.contains("\"JUMP\"") && e.contains("START, STOP"), "{e}");
        v["command"] = json!(3);
        assert!(parse(&v).expect_err("a number").to_string().contains("field `command`: expected a string"));
    }

    #[test]
    fn a_missing_app_id_is_refused_naming_the_field() {
        let mut v = good();
        v.as_object_mut().expect("object").remove("app_id");
        assert_eq!(parse(&v).expect_err("no app").to_string(), "field `app_id` is missing");
        v["app_id"] = json!(" ");
        assert_eq!(parse(&v).expect_err("empty").to_string(), "field `app_id`: is empty");
    }

    #[test]
    fn other_malformed_bodies_say_what_is_wrong() {
        let e = CommandMessage::parse(b"START a/b/c").expect_err("not json").to_string();
        assert!(e.contains("not a JSON object"), "{e}");
        assert!(CommandMessage::parse(b"[1]").expect_err("array").to_string().contains("got an array"));
        let mut v = good();
        v["requested_at"] = json!("yesterday");
        assert!(parse(&v).expect_err("time").to_string().contains("field `requested_at`: \"yesterday\""));
        let mut v = good();
        v["recorded"] = json!("yes");
        assert!(parse(&v).expect_err("flag").to_string().contains("field `recorded`"));
        let mut v = good();
        v["later_field"] = json!(1);
        assert!(parse(&v).is_ok(), "fields a later version adds are ignored");
    }
}
