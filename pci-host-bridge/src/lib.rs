//! pci-host-bridge library.
