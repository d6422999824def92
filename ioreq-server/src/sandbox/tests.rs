//! Unit tests of the sandbox: user specs and their resolution, `/proc` status parsing, and
//! that the filters compile.

use super::unlinker::unlinker_filter;
use super::*;

#[test]
fn user_specs_parse() {
    assert_eq!("1000".parse(), Ok(UserSpec::Numeric(1000, None)));
    assert_eq!("1000:5".parse(), Ok(UserSpec::Numeric(1000, Some(5))));
    assert_eq!("qemu".parse(), Ok(UserSpec::Name("qemu".into(), None)));
    assert!("qemu:x".parse::<UserSpec>().is_err());
    assert!(":5".parse::<UserSpec>().is_err());
}

#[test]
fn numeric_user_without_passwd_entry_gets_its_own_gid() {
    let id = resolve_user(&UserSpec::Numeric(3_999_999, None), 1, false).unwrap();
    assert_eq!(
        id,
        Identity::Switch(Ids {
            uid: 3_999_999,
            gid: 3_999_999
        })
    );
}

#[test]
fn missing_range_base_is_an_error_on_xen_naming_the_user() {
    if nix::unistd::User::from_name(RANGE_BASE_USER)
        .ok()
        .flatten()
        .is_some()
    {
        return; // this machine has it; the error path is not reachable here
    }
    let e = resolve_user(&UserSpec::RangeBase, 3, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains(RANGE_BASE_USER) && e.contains("useradd"), "{e}");
    assert!(matches!(
        resolve_user(&UserSpec::RangeBase, 3, true),
        Ok(Identity::KeepRoot(_))
    ));
}

#[test]
fn status_fields_parse() {
    let s = ProcStatus::parse(
        "Name:\tx\nUid:\t0\t4242\t4242\t4242\nNoNewPrivs:\t1\nSeccomp:\t2\nCapEff:\t0000000000000000\nVmSize:\t  1234 kB\n",
    );
    assert_eq!(s.uid, Some(4242));
    assert_eq!(s.no_new_privs, Some(1));
    assert_eq!(s.seccomp, Some(2));
    assert_eq!(s.cap_eff, Some(0));
    assert_eq!(s.vm_size_kib, Some(1234));
}

#[test]
fn filters_compile() {
    assert!(serving_filters().unwrap()[2].len() > 50);
    unlinker_filter().unwrap();
    assert!(allowed_syscalls().iter().any(|(n, _)| *n == "ioctl"));
    assert!(!allowed_syscalls().iter().any(|(n, _)| *n == "execve"));
    // The broker's list: its ioctl and its one signal, no exec, fork or socket.
    let broker: Vec<&str> = broker_allowed_syscalls(4242)
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert!(broker.contains(&"ioctl") && broker.contains(&"kill"));
    for forbidden in ["execve", "fork", "vfork", "socket", "ptrace", "mount"] {
        assert!(
            !broker.contains(&forbidden),
            "{forbidden} in the broker's list"
        );
    }
}
