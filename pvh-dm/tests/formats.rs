//! The xl config parser on real-world configs, and the newc cpio writer checked by the
//! system's `cpio` (GNU cpio or busybox) where one is installed, else by parsing it back.

mod common;

use std::process::Command;

use pvh_dm::xlcfg::{Value, XlConfig};

/// Shaped like xl.cfg(5)'s examples and Debian's /etc/xen/xlexample.pvhlinux.
const XLEXAMPLE: &str = r#"# =====================================================================
# Example PVH Linux guest configuration
# =====================================================================
#
# This is a fairly minimal example of what is required for a
# PVH Linux guest. For a more complete guide see xl.cfg(5)

# This configures a PVH rather than PV guest
type = "pvh"

# Guest name
name = "example.pvhlinux"

# 128-bit UUID for the domain as a hexadecimal number.
# Use "uuidgen" to generate one if required.
# The default behavior is to generate a new UUID each time the guest is started.
#uuid = "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX"

# Kernel image to boot
kernel = "/boot/vmlinuz"

# Ramdisk (optional)
#ramdisk = "/boot/initrd.gz"

# Kernel command line options
cmdline = "root=/dev/xvda1"

# Initial memory allocation (MB)
memory = 512

# Number of VCPUS
vcpus = 4

# Network devices
# A list of 'vifspec' entries as described in
# docs/misc/xl-network-configuration.markdown
vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0' ]

# Disk Devices
# A list of `diskspec' entries as described in
# docs/misc/xl-disk-configuration.txt
disk = [ '/dev/vg/guest-volume,raw,xvda,rw',
         'format=raw, vdev=xvdb, access=ro, target=/root/image.iso',
]
"#;

#[test]
fn parses_the_xlexample() {
    let c = XlConfig::parse(XLEXAMPLE).unwrap();
    assert_eq!(c.get("type").unwrap().as_str(), Some("pvh"));
    assert_eq!(c.get("name").unwrap().as_str(), Some("example.pvhlinux"));
    assert_eq!(c.get("memory").unwrap().as_u64(), Some(512));
    assert_eq!(c.get("vcpus").unwrap().as_u64(), Some(4));
    assert!(c.get("ramdisk").is_none(), "commented out");
    assert!(c.get("uuid").is_none(), "commented out");
    match c.get("disk").unwrap() {
        Value::List(l) => {
            assert_eq!(l.len(), 2);
            assert_eq!(
                l[1].as_str(),
                Some("format=raw, vdev=xvdb, access=ro, target=/root/image.iso")
            );
        }
        v => panic!("{v:?}"),
    }
    assert_eq!(c.setting("disk").unwrap().line, 42);
    // Replacing the ramdisk appends it; the rest stays byte for byte.
    let out = c.with_setting("ramdisk", &Value::Str("/run/pvh-dm/5/initrd".into()));
    assert!(out.starts_with(XLEXAMPLE));
    assert!(out.ends_with("ramdisk = \"/run/pvh-dm/5/initrd\"\n"));
}

#[test]
fn the_pci_key_is_found_wherever_it_is() {
    let c = XlConfig::parse("type='pvh'; name='a'\npci=['01:00.0,permissive=1',\n  '02:00.0']\n")
        .unwrap();
    let s = c.setting("pci").unwrap();
    assert_eq!(s.line, 2);
    let e = pvh_dm::plan::check_xl(&c).unwrap_err().to_string();
    assert!(
        e.contains("line 2") && e.contains("pciback/pcifront"),
        "{e}"
    );
}

#[test]
fn parser_errors_carry_lines() {
    for (text, line, what) in [
        ("name = \"a\"\nkernel = \n", 2, "expected a value"),
        (
            "name = 'a'\n\ndisk = [ 'x' 'y' ]\n",
            3,
            "expected ',' or ']'",
        ),
        ("name = 'a'\nmemory = 1\nmemory = 2\n", 3, "set twice"),
        ("name 'a'\n", 1, "expected '='"),
    ] {
        let e = XlConfig::parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(what), "{text:?}: {e}");
    }
}

fn tables_cpio() -> Vec<u8> {
    let mut w = pvh_dm::cpio::Writer::new(Vec::new());
    w.dir("kernel").unwrap();
    w.dir("kernel/firmware").unwrap();
    w.dir("kernel/firmware/acpi").unwrap();
    w.file(
        "kernel/firmware/acpi/ssdt.aml",
        b"SSDT\x24\0\0\0 odd length!",
    )
    .unwrap();
    w.file("kernel/firmware/acpi/apic.aml", &[0xA5; 1000])
        .unwrap();
    w.finish().unwrap().0
}

#[test]
fn the_cpio_reads_back() {
    let b = tables_cpio();
    let (entries, end) = pvh_dm::cpio::parse(&b).unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[4].data, vec![0xA5; 1000]);
    assert!(b[end..].iter().all(|&x| x == 0));
}

#[test]
fn the_cpio_is_what_cpio_reads() {
    let tmp = common::TempDir::new("cpio");
    let f = tmp.0.join("t.cpio");
    std::fs::write(&f, tables_cpio()).unwrap();
    let (prog, args): (&str, &[&str]) = if Command::new("cpio").arg("--version").output().is_ok() {
        ("cpio", &["-t", "--quiet"])
    } else if Command::new("busybox").arg("cpio").output().is_ok() {
        ("busybox", &["cpio", "-t"])
    } else {
        eprintln!("no cpio program: checked by parsing only");
        return;
    };
    let o = Command::new(prog)
        .args(args)
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        [
            "kernel",
            "kernel/firmware",
            "kernel/firmware/acpi",
            "kernel/firmware/acpi/ssdt.aml",
            "kernel/firmware/acpi/apic.aml"
        ]
    );
    // And extracted, the contents match.
    let out = tmp.0.join("x");
    std::fs::create_dir_all(&out).unwrap();
    let (prog, args): (&str, &[&str]) = if prog == "cpio" {
        ("cpio", &["-i", "-d", "--quiet"])
    } else {
        ("busybox", &["cpio", "-i", "-d"])
    };
    let o = Command::new(prog)
        .args(args)
        .current_dir(&out)
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out.join("kernel/firmware/acpi/apic.aml")).unwrap(),
        vec![0xA5; 1000]
    );
    assert_eq!(
        std::fs::read(out.join("kernel/firmware/acpi/ssdt.aml")).unwrap(),
        b"SSDT\x24\0\0\0 odd length!"
    );
}
