//! `--add-host`: extra /etc/hosts lines, `host-gateway` included.

use super::SpecError;

/// What `--add-host host-gateway` stands for. docker puts its bridge's address there; skiff
/// has no bridge, and on the host network (its default) the host is 127.0.0.1.
pub const HOST_GATEWAY: &str = "127.0.0.1";

/// Parses `--add-host NAME:IP` or `NAME=IP` as docker does (IPv6 as `NAME:::1` or
/// `NAME=[::1]`; `host-gateway` for the host): (name, address).
pub fn extra_host(arg: &str) -> Result<(String, String), SpecError> {
    let invalid = |reason: &str| SpecError::Invalid {
        what: "--add-host",
        value: arg.to_owned(),
        reason: reason.to_owned(),
    };
    let (name, ip) = arg
        .split_once('=')
        .or_else(|| arg.split_once(':'))
        .ok_or_else(|| invalid("expected NAME:IP"))?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
        return Err(invalid("the host name is empty or contains white space"));
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip == "host-gateway" {
        return Ok((name.to_owned(), HOST_GATEWAY.to_owned()));
    }
    match ip.parse::<std::net::IpAddr>() {
        Ok(addr) => Ok((name.to_owned(), addr.to_string())),
        Err(_) => Err(invalid(
            "invalid IP address (give an IPv4 or IPv6 address, or host-gateway)",
        )),
    }
}
