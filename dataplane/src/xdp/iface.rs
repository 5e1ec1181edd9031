//! Interface facts from `SIOCGIF*` ioctls, asked of a socket in the calling
//! thread's network namespace (sysfs would show the namespace it was mounted
//! in, not the one a thread entered with setns).

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

fn ioctl(iface: &str, request: libc::Ioctl) -> io::Result<libc::ifreq> {
    if iface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: the request reads ifr_name and fills ifr_ifru of the ifreq we
    // own, for the duration of the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

pub fn mtu(iface: &str) -> io::Result<u32> {
    let req = ioctl(iface, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled ifru_mtu.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

pub fn mac(iface: &str) -> io::Result<[u8; 6]> {
    let req = ioctl(iface, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled ifru_hwaddr.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr }.sa_data;
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// The interface's (first) IPv4 address.
pub fn ipv4(iface: &str) -> io::Result<Ipv4Addr> {
    let req = ioctl(iface, libc::SIOCGIFADDR)?;
    // SAFETY: SIOCGIFADDR filled ifru_addr with a sockaddr_in for AF_INET,
    // which is no larger than the sockaddr it is read from.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&req.ifr_ifru.ifru_addr) };
    Ok(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback() {
        assert_eq!(super::ipv4("lo").unwrap(), std::net::Ipv4Addr::LOCALHOST);
        assert!(super::mtu("lo").unwrap() >= 1500);
        assert_eq!(super::mac("lo").unwrap(), [0; 6]);
        assert!(super::mtu("no-such-if0").is_err());
        assert!(super::mtu("a-name-longer-than-ifnamsiz").is_err());
    }
}
