//! Development tool: boots a system and serves one gdb stub straight over TCP, without the host
//! link or the bridge — for debugging the stub itself.
//!
//! `cargo run -p debug-agent --example gdb_tcp -- SYSTEM.toml PARTITION[.VCPU] PORT`

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use debug_agent::gdb::{GdbSession, GdbSessionOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, system, target, port] = &args[..] else {
        eprintln!("usage: gdb_tcp SYSTEM.toml PARTITION[.VCPU] PORT");
        std::process::exit(2);
    };
    let config = hv_config::SystemConfig::load(system.as_ref()).expect("system description");
    let mut system = hv_core::System::new(config).expect("build system");
    let events = system.subscribe(1 << 16);
    system.start().expect("start");
    std::thread::spawn(move || {
        for event in events {
            if let hv_core::SystemEvent::ConsoleLine { partition, line } = event {
                println!("[{partition}] {line}");
            }
        }
    });
    let (name, vcpu) = match target.split_once('.') {
        Some((n, v)) => (n.to_owned(), Some(v.parse::<u32>().expect("vcpu"))),
        None => (target.clone(), None),
    };
    let partition = system.handle(&name).expect("partition");
    let all: Arc<[hv_core::PartitionHandle]> = system.handles().into();
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("port"))).unwrap();
    eprintln!("gdb stub for {target} on port {port}");
    for stream in listener.incoming() {
        let mut stream = stream.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let session = GdbSession::start(
            partition.clone(),
            all.clone(),
            vcpu,
            Box::new(move |bytes| writer.write_all(bytes).is_ok()),
            GdbSessionOptions::default(),
        )
        .unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => session.input(&buf[..n]),
            }
        }
        session.close();
        eprintln!("gdb disconnected");
    }
}
