//! A test device model: plain storage behind a port range, an MMIO page and one PCI function,
//! served as its own process through the real library (config, transport, loop, control
//! socket). The protocol tests drive it from a simulated guest. `--stall-port` makes it block
//! forever on one port, so a test can kill it in the middle of a request.

use clap::Parser;
use ioreq_server::cli::{init_logging, serve, CommonArgs};
use ioreq_server::device::{Actions, Device, Range, Space};
use ioreq_server::server::ServerOptions;
use tests::scratch::Scratch;

#[derive(Parser)]
#[command(about = "Scratch-register test device model")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Buffered ioreq handling: 0 off, 1 legacy, 2 atomic.
    #[arg(long, default_value_t = 0)]
    bufioreq: u8,
    /// Block forever on any access to this port.
    #[arg(long, value_parser = clap_num)]
    stall_port: Option<u16>,
}

fn clap_num(s: &str) -> Result<u16, String> {
    let r = if let Some(h) = s.strip_prefix("0x") {
        u16::from_str_radix(h, 16)
    } else {
        s.parse()
    };
    r.map_err(|e| e.to_string())
}

struct Stalling(Scratch, Option<u16>);

impl Device for Stalling {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn ranges(&self) -> Vec<Range> {
        self.0.ranges()
    }
    fn read(&mut self, space: Space, addr: u64, size: u8, actions: &mut Actions) -> u64 {
        if space == Space::Port && Some(addr as u16) == self.1 {
            loop {
                std::thread::park();
            }
        }
        self.0.read(space, addr, size, actions)
    }
    fn write(&mut self, space: Space, addr: u64, size: u8, data: u64, actions: &mut Actions) {
        self.0.write(space, addr, size, data, actions)
    }
    fn status(&self) -> serde_json::Value {
        self.0.status()
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    init_logging(&a.common.log);
    let cfg = a.common.load()?;
    let dev = Stalling(Scratch::new(), a.stall_port);
    serve(
        &a.common,
        &cfg,
        vec![Box::new(dev)],
        ServerOptions {
            name: "scratch-dm".into(),
            bufioreq: a.bufioreq,
            ..Default::default()
        },
    )
}
