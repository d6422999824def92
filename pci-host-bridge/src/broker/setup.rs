//! The broker's policy from the bridge's own view of the functions, over the backends the
//! broker will keep.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;

use xen_abi::DomId;

use super::policy::{AssignedFunction, BrokerPolicy};
use crate::backend::{BarInfo, HostDevice};
use crate::bridge::PciHostBridge;
use crate::config::PciConfig;
use crate::error::Error;
use crate::topology::PciAddress;

/// A backend lent, read-only, to the bridge that computes the broker's view.
struct Lent(Rc<RefCell<Box<dyn HostDevice>>>);

impl Lent {
    fn refuse(&self) -> Error {
        Error::Backend {
            device: self.name(),
            message: "the broker's view of the function never changes it".into(),
        }
    }
}

impl HostDevice for Lent {
    fn name(&self) -> String {
        self.0.borrow().name()
    }
    fn config_len(&self) -> usize {
        self.0.borrow().config_len()
    }
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), Error> {
        self.0.borrow().read_config(offset, buf)
    }
    fn write_config(&mut self, _: u16, _: &[u8]) -> Result<(), Error> {
        Err(self.refuse())
    }
    fn ids(&self) -> (u16, u16) {
        self.0.borrow().ids()
    }
    fn bar(&self, index: usize) -> Option<BarInfo> {
        self.0.borrow().bar(index)
    }
    fn rom(&self) -> Option<BarInfo> {
        self.0.borrow().rom()
    }
    fn is_virtual_function(&self) -> bool {
        self.0.borrow().is_virtual_function()
    }
    fn intx_fd(&self) -> Option<RawFd> {
        self.0.borrow().intx_fd()
    }
    fn intx_ack(&mut self) -> Result<u64, Error> {
        Err(self.refuse())
    }
    fn intx_mask(&mut self) -> Result<(), Error> {
        Err(self.refuse())
    }
    fn intx_unmask(&mut self) -> Result<(), Error> {
        Err(self.refuse())
    }
    fn enable_decode(&mut self) -> Result<(), Error> {
        Err(self.refuse())
    }
    fn disable_decode(&mut self) -> Result<(), Error> {
        Err(self.refuse())
    }
    fn reset(&mut self) -> Result<bool, Error> {
        Err(self.refuse())
    }
    fn reprobe_host_driver(&mut self) -> Result<(), Error> {
        Err(self.refuse())
    }
    fn detach_host_driver(&mut self) -> Result<Option<String>, Error> {
        Err(self.refuse())
    }
}

/// A backend with its host function, as [`super::Broker::new`] takes them.
pub type Backend = (PciAddress, Box<dyn HostDevice>);

/// The policy for guest `domid` and `config`'s functions over `backends` (one per
/// `config.devices` entry, in order): the layouts, BARs and capabilities are those
/// [`PciHostBridge::with_backends`] builds, the very code the worker's bridge runs. Returns
/// the backends with their host addresses, for [`super::Broker::new`].
pub fn policy_for(
    config: &PciConfig,
    domid: DomId,
    backends: Vec<Box<dyn HostDevice>>,
) -> Result<(BrokerPolicy, Vec<Backend>), Error> {
    let shared: Vec<Rc<RefCell<Box<dyn HostDevice>>>> = backends
        .into_iter()
        .map(|b| Rc::new(RefCell::new(b)))
        .collect();
    let functions = {
        let view = PciHostBridge::with_backends(
            config,
            shared
                .iter()
                .map(|s| Box::new(Lent(s.clone())) as Box<dyn HostDevice>)
                .collect(),
        )?;
        view.functions().map(AssignedFunction::of).collect()
    };
    let backends = config
        .devices
        .iter()
        .zip(shared)
        .map(|(d, s)| {
            let dev = Rc::try_unwrap(s)
                .map_err(|_| Error::Config("broker: a backend is still lent".into()))?
                .into_inner();
            Ok((d.host, dev))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok((
        BrokerPolicy::new(domid, config.windows(), functions),
        backends,
    ))
}
