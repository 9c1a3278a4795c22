//! The system name, the `[agent]` table (host link address, gdb base port) and the gdb
//! bridge's port plan.

use super::*;

impl Validator<'_> {
    pub(super) fn system_name(&mut self, raw: &RawDocument, path: &Path) -> String {
        if let Some(name) = raw.system.as_ref().and_then(|s| s.name.as_ref()) {
            let text = name.get_ref();
            let bad = text
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')));
            if text.is_empty() || text.len() > 63 || bad.is_some() {
                self.error(name.span(), "invalid system name")
                    .label("not a valid system name")
                    .note(
                        "system names are 1 to 63 characters of letters, digits, `_`, `-` and `.`",
                    );
            }
            return text.clone();
        }
        match path.file_stem().map(|s| s.to_string_lossy().into_owned()) {
            Some(stem) if !stem.is_empty() => stem,
            _ => "system".into(),
        }
    }

    pub(super) fn agent(&mut self, raw: &RawDocument) -> AgentConfig {
        let Some(agent) = raw.agent.as_ref() else {
            return AgentConfig::default();
        };
        let mut is_tcp = false;
        if let Some(link) = &agent.link {
            is_tcp = link.get_ref().starts_with("tcp:");
            self.link(link);
        }
        let token_file = agent.token_file.as_ref().map(|t| {
            if t.get_ref().is_empty() {
                self.error(t.span(), "`token_file` is empty")
                    .label("expected a path");
            }
            if !is_tcp {
                self.warning(t.span(), "`token_file` is only used with a `tcp:` link")
                    .label("ignored");
            }
            absolute(&self.base_dir.join(t.get_ref()))
        });
        let mut gdb_base_port = DEFAULT_GDB_BASE_PORT;
        if let Some(port) = &agent.gdb_base_port {
            match u16::try_from(*port.get_ref()) {
                Ok(0) | Err(_) => {
                    self.error(
                        port.span(),
                        format!("GDB port {} is out of range", port.get_ref()),
                    )
                    .label("expected 1..=65535");
                }
                Ok(p) => {
                    if p < 1024 {
                        self.warning(port.span(), format!("GDB port {p} is a privileged port"))
                            .label("below 1024")
                            .note("binding it needs root or CAP_NET_BIND_SERVICE");
                    }
                    gdb_base_port = p;
                }
            }
        }
        AgentConfig {
            link: agent.link.as_ref().map(|l| l.get_ref().clone()),
            token_file,
            gdb_base_port,
            resume_on_detach: agent.resume_on_detach.as_ref().is_none_or(|r| *r.get_ref()),
        }
    }

    /// An explicit `gdb_base_port` must leave room for every partition's and vCPU's port.
    pub(super) fn gdb_port_plan(&mut self, raw: &RawDocument, parts: &[Part], base: u16) {
        let Some(port) = raw.agent.as_ref().and_then(|a| a.gdb_base_port.as_ref()) else {
            return;
        };
        if u64::from(base) != *port.get_ref() || parts.is_empty() {
            return; // out of range: reported already
        }
        let vcpus: Vec<u32> = parts.iter().map(|p| p.vcpus.unwrap_or(1)).collect();
        let top = gdb_port_plan_top(base, &vcpus);
        if top <= u64::from(u16::MAX) {
            return;
        }
        let span = top - u64::from(base);
        let n = parts.len();
        let d = self
            .error(
                port.span(),
                format!("GDB port plan does not fit: it needs ports {base}..={top}"),
            )
            .label(format!(
                "{n} partition{} need{} {} ports above the base",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                span
            ))
            .note(
                "partition k is on BASE+k and its vCPU j alone on BASE+100+16k+j; every port must be at most 65535",
            );
        if let Some(highest) = u64::from(u16::MAX).checked_sub(span).filter(|h| *h >= 1) {
            d.note(format!(
                "for this system, use a base port of at most {highest}"
            ));
        }
    }

    pub(super) fn link(&mut self, link: &Spanned<String>) {
        let text = link.get_ref();
        const FORMS: &str =
            "the link is \"unix:<socket path>\", \"tcp:127.0.0.1:<port>\" or \"pty\"";
        if text == "pty" {
            return;
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                self.error(link.span(), "`unix:` link has no socket path")
                    .label("expected \"unix:<path>\"");
            } else if path.len() > MAX_UNIX_PATH {
                self.error(link.span(), "unix socket path is too long")
                    .label(format!("{} bytes", path.len()))
                    .note(format!("socket paths are limited to {MAX_UNIX_PATH} bytes"));
            }
            return;
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            match addr.parse::<SocketAddr>() {
                Err(_) => {
                    self.error(link.span(), format!("invalid TCP address `{addr}`"))
                        .label("expected <ip>:<port>")
                        .note("write e.g. \"tcp:127.0.0.1:4000\"");
                }
                Ok(sock) if sock.port() == 0 => {
                    self.error(link.span(), "TCP link port must not be 0")
                        .label("port 0");
                }
                Ok(sock) if !sock.ip().is_loopback() => {
                    self.error(link.span(), "TCP link must listen on a loopback address")
                        .label(format!("{} is not loopback", sock.ip()))
                        .note("the host link exposes guest memory and control; use 127.0.0.1 and an SSH tunnel for remote access");
                }
                Ok(_) => {}
            }
            return;
        }
        self.error(link.span(), format!("unknown link `{text}`"))
            .label("not a link address")
            .note(FORMS);
    }
}
