//! Looking inside a plugin file safely. `precheck` reads the file header in the
//! host (not a library, truncated, wrong architecture, wrong OS); `probe` then
//! loads the library in a child process (`dc-host plugin-probe FILE`), because
//! loading runs plugin code and a loaded library can never be unloaded. The
//! child answers with the manifest as JSON, or a refusal that names what was
//! expected and what was found.
//!
//! The interface version a plugin was built against is read from the library
//! header before any plugin code runs, and checked by our own rule
//! ([`dc_plugin_api::check_plugin_version`]: same major, minor not newer than
//! this host's), so a refusal names both versions instead of a layout dump.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use abi_stable::library::LibraryError;
use dc_plugin_api::Manifest;
use dc_plugin_api::abi::PluginModRef;
use goblin::Object;
use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// What a probe found in a loadable plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeOutput {
    /// The plugin interface (dc-plugin-api) version the plugin was built
    /// against, as abi_stable recorded it in the library (`1.0.0`, `1.1.0`, …).
    pub interface_version: String,
    /// The dc-plugin-sdk version the plugin was built with (none for plugins
    /// built before the SDK existed, interface 1.0).
    pub sdk_version: Option<String>,
    /// Host capabilities the plugin requires.
    pub requires: Vec<String>,
    /// The manifest as the plugin declares it.
    pub manifest: Manifest,
}

impl ProbeOutput {
    /// Re-checks an answer that came from the probe child: the child ran plugin
    /// code, so the parent trusts none of it (versions, manifest rules).
    pub fn validate(&self, path: &Path) -> Result<(), String> {
        if let Some(why) = dc_plugin_api::check_plugin_version(&self.interface_version) {
            return Err(format!("{}: {why}", path.display()));
        }
        let problems = self.manifest.validate();
        if !problems.is_empty() {
            return Err(format!("{} has an invalid manifest: {}", path.display(), problems.join("; ")));
        }
        if self.sdk_version != self.manifest.sdk_version || self.requires != self.manifest.requires {
            return Err(format!(
                "{}: the probe's answer contradicts the manifest; the plugin was not registered",
                path.display()
            ));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ProbeAnswer {
    Ok(Box<ProbeOutput>),
    Refused(String),
}

#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: (u16, &str) = (goblin::elf::header::EM_X86_64, "x86_64");
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: (u16, &str) = (goblin::elf::header::EM_AARCH64, "aarch64");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const HOST_MACHINE: (u16, &str) = (0, std::env::consts::ARCH);

/// What kind of file system object `path` is, in words, when it is not a
/// regular file (following symlinks), or why it cannot be looked at.
pub fn not_a_regular_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let p = path.display();
    let link = std::fs::symlink_metadata(path).ok().filter(|m| m.file_type().is_symlink());
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) => {
            let t = m.file_type();
            let what = if t.is_dir() {
                "a directory"
            } else if t.is_block_device() || t.is_char_device() {
                "a device"
            } else if t.is_fifo() {
                "a named pipe"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            let via = if link.is_some() { " (through a symlink)" } else { "" };
            Some(format!("{p} is {what}{via}, not a plugin file; remove it from the plugins directory"))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Some(format!("{p} is a symlink loop; remove it or point it at a plugin file"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && link.is_some() => {
            let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
            Some(format!("{p} is a dangling symlink (to {target}); remove it or restore its target"))
        }
        Err(e) => Some(format!("cannot read {p}: {e}")),
    }
}

/// Checks what the entry is and its size, reading nothing: a regular file
/// of at most `max_bytes`.
pub fn check_entry(path: &Path, max_bytes: u64) -> Result<(), String> {
    if let Some(why) = not_a_regular_file(path) {
        return Err(why);
    }
    let len = std::fs::metadata(path).map(|m| m.len()).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if len > max_bytes {
        return Err(format!(
            "{} is {} MiB, over the limit of {} MiB for plugin files; raise general.max_plugin_file_mb if it really is a plugin",
            path.display(),
            len.div_ceil(1024 * 1024),
            max_bytes / (1024 * 1024)
        ));
    }
    Ok(())
}

/// Checks the file header without loading it. Files larger than `max_bytes`
/// are refused before a byte is read ([`check_entry`]).
pub fn precheck(path: &Path, max_bytes: u64) -> Result<(), String> {
    check_entry(path, max_bytes)?;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max_bytes + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() < 64 {
        return Err(format!(
            "{} is not a shared library: it is only {} bytes long; rebuild the plugin with `cargo build` (crate-type = [\"cdylib\"])",
            path.display(),
            bytes.len()
        ));
    }
    let elf = match Object::parse(&bytes) {
        Ok(Object::Elf(elf)) => elf,
        Ok(Object::Mach(_)) => {
            return Err(format!(
                "{} is a macOS library; this host needs a Linux .so built for {}",
                path.display(),
                HOST_MACHINE.1
            ));
        }
        Ok(Object::PE(_)) => {
            return Err(format!(
                "{} is a Windows library; this host needs a Linux .so built for {}",
                path.display(),
                HOST_MACHINE.1
            ));
        }
        // goblin answers Ok(Unknown) for a file with no known magic number
        Ok(Object::Unknown(_)) | Err(_) if !bytes.starts_with(b"\x7fELF") => {
            return Err(format!(
                "{} is not a shared library (no ELF header); plugins are .so files built with crate-type = [\"cdylib\"]",
                path.display()
            ));
        }
        Ok(_) => {
            return Err(format!(
                "{} is not a shared library (unknown format); build the plugin as a cdylib",
                path.display()
            ));
        }
        Err(e) => {
            return Err(format!("{} is truncated or corrupt ({e}); copy the complete file again", path.display()));
        }
    };
    if elf.header.e_machine != HOST_MACHINE.0 {
        return Err(format!(
            "{} is built for another architecture ({}); this host runs {}: rebuild the plugin for {}",
            path.display(),
            goblin::elf::header::machine_to_str(elf.header.e_machine),
            HOST_MACHINE.1,
            HOST_MACHINE.1
        ));
    }
    if elf.header.e_type != goblin::elf::header::ET_DYN {
        return Err(format!(
            "{} is an ELF {} but not a shared library; build the plugin with crate-type = [\"cdylib\"]",
            path.display(),
            goblin::elf::header::et_to_str(elf.header.e_type)
        ));
    }
    let len = bytes.len() as u64;
    let sh_end = elf.header.e_shoff + u64::from(elf.header.e_shnum) * u64::from(elf.header.e_shentsize);
    let seg_end = elf.program_headers.iter().map(|p| p.p_offset + p.p_filesz).max().unwrap_or(0);
    if sh_end > len || seg_end > len {
        return Err(format!(
            "{} is truncated: the file has {len} bytes but its headers describe {} bytes; copy the complete file again",
            path.display(),
            sh_end.max(seg_end)
        ));
    }
    Ok(())
}

/// Boils abi_stable's layout dump (~190 lines) down to what differs: the
/// mismatch kind, the last field named, and the expected and found values
/// (which abi_stable prints on the line after `Expected:` / `Found:`).
fn summarize_abi_dump(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let value_after = |i: usize, label: &str| -> Option<String> {
        let inline = lines[i].split_once(label).map(|(_, v)| v.trim()).unwrap_or("");
        if !inline.is_empty() { Some(inline.to_string()) } else { lines.get(i + 1).map(|v| v.to_string()) }
    };
    let (mut kind, mut field, mut expected, mut found) = (None, None, None, None);
    for (i, l) in lines.iter().enumerate() {
        if l.contains("mismatched") || l.contains("incompatible") {
            kind = Some(l.trim_start_matches("Error:").trim().to_string());
        }
        if let Some(f) = l.strip_prefix("field_name:") {
            field = Some(f.trim().to_string());
        }
        if l.starts_with("Expected:") {
            expected = value_after(i, "Expected:");
        }
        if l.starts_with("Found:") {
            found = value_after(i, "Found:");
        }
    }
    let mut out = kind.unwrap_or_else(|| "layout differs".to_string());
    if let Some(f) = field {
        out.push_str(&format!(" in field {f}"));
    }
    // the check runs plugin-as-interface against host-as-implementation
    if let (Some(e), Some(f)) = (expected, found) {
        out.push_str(&format!(": the plugin has {e}, this host has {f}"));
    }
    out
}

fn describe(path: &Path, e: &LibraryError) -> String {
    let p = path.display();
    match e {
        LibraryError::OpenError { err, .. } => {
            format!(
                "{p} cannot be loaded as a shared library: {err}; check that it was built for this platform and its dependencies are installed"
            )
        }
        LibraryError::GetSymbolError { .. } => format!(
            "{p} is a shared library but has no dc-host root module; export one with `dc_plugin_sdk::export_plugin!(YourScraper);`"
        ),
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => format!(
            "{p} was built against an incompatible plugin interface: this host implements dc-plugin-api {expected_version}, the plugin was built against {actual_version}; rebuild the plugin against dc-plugin-api {}.x",
            expected_version.major
        ),
        LibraryError::AbiInstability(dump) => format!(
            "{p} has an incompatible plugin interface layout ({}); rebuild the plugin against this host's dc-plugin-api {}",
            summarize_abi_dump(&dump.to_string()),
            dc_plugin_api::ABI_VERSION
        ),
        LibraryError::InvalidAbiHeader(h) => format!(
            "{p} was built with an incompatible abi_stable ({h:?}); rebuild it against dc-plugin-api {}",
            dc_plugin_api::ABI_VERSION
        ),
        LibraryError::Many(errs) => errs.iter().map(|e| describe(path, e)).collect::<Vec<_>>().join("; "),
        other => format!("{p} cannot be loaded: {other}"),
    }
}

/// Loads the plugin's root module in THIS process, after checking the
/// interface version recorded in its header and the layout of every type the
/// plugin was built with. Only the probe child and the worker call it: the
/// library stays mapped for the life of the process. Returns the module and
/// the plugin's interface version.
///
/// Why not abi_stable's `init_root_module`: its layout check lets the library
/// have *more* prefix fields than the loader (an old loader, a new library),
/// and refuses the case we promise, a new host loading an old plugin, whose
/// vtables have fewer methods. So the check runs the other way round: the
/// plugin's layout is the "interface" and the host's the "implementation",
/// i.e. the host must offer everything the plugin was built with, field by
/// field, with the same types. That is exactly what is safe at run time:
/// - `HostCallbacks` vtables are made by the host, so a plugin reads at most
///   its own (smaller) number of methods;
/// - `PluginMod` and `ScraperFfi` vtables are made by the plugin; a host field
///   or method the plugin lacks is found missing at run time from the prefix
///   metadata the plugin carries (`missing_field(option)`, default methods);
/// - every other type must match exactly, in both directions.
pub fn load_module(path: &Path) -> Result<(PluginModRef, String), String> {
    use abi_stable::StableAbi;
    let header = abi_stable::library::lib_header_from_path(path).map_err(|e| describe(path, &e))?;
    let built_against = header.version_strings().version.as_str().to_string();
    if let Some(why) = dc_plugin_api::check_plugin_version(&built_against) {
        return Err(format!("{} was built against an incompatible plugin interface: {why}", path.display()));
    }
    let plugin_layout = header.layout().ok_or_else(|| {
        format!(
            "{} carries no type layout (built with `unsafe_no_layout_constant`?), so its interface cannot be checked; export it with `dc_plugin_sdk::export_plugin!`",
            path.display()
        )
    })?;
    abi_stable::abi_stability::abi_checking::check_layout_compatibility(plugin_layout, PluginModRef::LAYOUT).map_err(
        |e| {
            format!(
                "{} has an incompatible plugin interface layout ({}); rebuild the plugin against this host's dc-plugin-api {}",
                path.display(),
                summarize_abi_dump(&e.to_string()),
                dc_plugin_api::ABI_VERSION
            )
        },
    )?;
    // SAFETY: the layout of the plugin's root module, and of every type it
    // reaches, was checked just above to be one this host's `PluginModRef`
    // extends compatibly (see the function docs); the version was checked too.
    #[allow(unsafe_code)]
    let module =
        unsafe { header.init_root_module_with_unchecked_layout::<PluginModRef>() }.map_err(|e| describe(path, &e))?;
    Ok((module, built_against))
}

/// Reads the manifest of a loaded module.
pub fn read_manifest(path: &Path, module: PluginModRef, built_against: String) -> Result<ProbeOutput, String> {
    let interface_version = (module.interface_version())();
    let json = (module.manifest())().into_string();
    let manifest: Manifest = serde_json::from_str(&json)
        .map_err(|e| format!("{} has an invalid manifest: {e}; fix the plugin's `manifest()`", path.display()))?;
    if interface_version != manifest.interface_version {
        return Err(format!(
            "{} declares interface_version {} in its manifest but was built against interface {}; let the SDK fill it in (Manifest::new)",
            path.display(),
            manifest.interface_version,
            interface_version
        ));
    }
    let out = ProbeOutput {
        interface_version: built_against,
        sdk_version: manifest.sdk_version.clone(),
        requires: manifest.requires.clone(),
        manifest,
    };
    out.validate(path)?;
    Ok(out)
}

/// The body of `dc-host plugin-probe FILE`: prints one JSON answer on stdout.
pub fn probe_child_main(path: &Path) -> i32 {
    let answer = match load_module(path).and_then(|(m, v)| read_manifest(path, m, v)) {
        Ok(out) => ProbeAnswer::Ok(Box::new(out)),
        Err(msg) => ProbeAnswer::Refused(msg),
    };
    println!("{}", serde_json::to_string(&answer).unwrap_or_default());
    0
}

/// Reads a child's pipe to its end on a thread, so a large answer never
/// blocks the child on a full pipe while we wait for it to exit.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let mut bytes = Vec::new();
            let _ = p.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Prechecks and probes a file in a child process (`exe plugin-probe FILE`).
pub fn probe(exe: &Path, path: &Path, timeout: Duration, max_bytes: u64) -> Result<ProbeOutput, RuntimeError> {
    precheck(path, max_bytes).map_err(RuntimeError::Refused)?;
    let mut child = Command::new(exe)
        .arg("plugin-probe")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("DC_LOG", "error")
        .spawn()
        .map_err(RuntimeError::io("cannot start probe process", exe))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(RuntimeError::io("cannot wait for probe process", exe))? {
            Some(s) => break s,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RuntimeError::Refused(format!(
                    "{} did not finish loading within {}s (a hang in its initialisation?); the plugin was not registered",
                    path.display(),
                    timeout.as_secs()
                )));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    // the child has exited: its pipes end (unless it left a process holding them)
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match serde_json::from_str::<ProbeAnswer>(out.trim()) {
        Ok(ProbeAnswer::Ok(o)) => {
            o.validate(path).map_err(RuntimeError::Refused)?;
            Ok(*o)
        }
        Ok(ProbeAnswer::Refused(msg)) => Err(RuntimeError::Refused(msg)),
        Err(_) => Err(RuntimeError::Refused(format!(
            "{} crashed the probe process while loading ({}){}; the plugin was not registered",
            path.display(),
            crate::supervisor::describe_exit(&status),
            last_line(&err).map(|l| format!(": {l}")).unwrap_or_default()
        ))),
    }
}

fn last_line(s: &str) -> Option<&str> {
    s.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precheck_refusals_are_specific() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("notes.so");
        std::fs::write(&text, "this is a text file, not a library at all; it is long enough to parse headers.")
            .expect("write");
        let max = 256 << 20;
        assert!(precheck(&text, max).expect_err("refused").contains("not a shared library (no ELF header)"));
        let tiny = dir.path().join("tiny.so");
        std::fs::write(&tiny, b"\x7fELF").expect("write");
        assert!(precheck(&tiny, max).expect_err("refused").contains("only 4 bytes long"));
        // a truncated copy of this (ELF, host architecture) test binary is
        // refused as truncated, and one patched to another machine as such
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read self");
        let cut = dir.path().join("cut.so");
        std::fs::write(&cut, &me[..me.len() / 2]).expect("write");
        assert!(precheck(&cut, max).expect_err("refused").contains("truncated"));
        let mut arm = me.clone();
        arm[18] = 0x28; // e_machine = ARM (little endian)
        arm[19] = 0;
        let arm_path = dir.path().join("arm.so");
        std::fs::write(&arm_path, &arm).expect("write");
        assert!(precheck(&arm_path, max).expect_err("refused").contains("another architecture"));
    }

    #[test]
    fn files_over_the_limit_and_non_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        // a sparse 3 GiB file: refusing it must not read (or allocate) it
        let big = dir.path().join("big.so");
        std::fs::File::create(&big).and_then(|f| f.set_len(3 << 30)).expect("sparse file");
        let err = precheck(&big, 256 << 20).expect_err("refused");
        assert!(
            err.contains("is 3072 MiB, over the limit of 256 MiB") && err.contains("general.max_plugin_file_mb"),
            "{err}"
        );

        let d = dir.path().join("dir.so");
        std::fs::create_dir(&d).expect("mkdir");
        assert!(precheck(&d, 1 << 20).expect_err("refused").contains("is a directory, not a plugin file"));
        let looped = dir.path().join("loop.so");
        std::os::unix::fs::symlink(&looped, &looped).expect("symlink");
        assert!(precheck(&looped, 1 << 20).expect_err("refused").contains("is a symlink loop"));
        let dangling = dir.path().join("dangling.so");
        std::os::unix::fs::symlink(dir.path().join("gone.so"), &dangling).expect("symlink");
        assert!(precheck(&dangling, 1 << 20).expect_err("refused").contains("is a dangling symlink (to "));
        let dev = dir.path().join("null.so");
        std::os::unix::fs::symlink("/dev/null", &dev).expect("symlink");
        assert!(precheck(&dev, 1 << 20).expect_err("refused").contains("is a device (through a symlink)"));
    }

    #[test]
    fn abi_dump_is_summarized() {
        // the shape abi_stable prints: values on the line after the label
        let dump = "lots of text\n  field_name:headers\n  type:RVec<FfiHeader>\n  field_name:timeout_ms\n  type:u32\nError:mismatched type\nExpected:\n    u64\nFound:\n    u32\nmore";
        assert_eq!(
            summarize_abi_dump(dump),
            "mismatched type in field timeout_ms: the plugin has u64, this host has u32"
        );
        assert_eq!(
            summarize_abi_dump("Error:mismatched type\nExpected: u32\nFound: u64"),
            "mismatched type: the plugin has u32, this host has u64"
        );
    }
}
