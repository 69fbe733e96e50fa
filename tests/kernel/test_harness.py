"""The kernel harness itself: namespaces are isolated and the veth pair carries traffic."""



def test_namespaces_have_separate_ipvs_tables(netns_pair):
    a, b = netns_pair
    a.run("ipvsadm -A -t 10.99.0.1:80 -s rr")
    assert "10.99.0.1:80" in a.run("ipvsadm -Ln").stdout
    assert "10.99.0.1:80" not in b.run("ipvsadm -Ln").stdout


def test_veth_pair_carries_ipv4_and_ipv6(netns_pair):
    a, b = netns_pair
    a.run("busybox ping -c 1 -W 5 10.99.0.2")
    a.run("busybox ping -6 -c 1 -W 5 fd99::2")
