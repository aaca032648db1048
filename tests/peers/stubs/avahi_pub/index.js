// rtpmidi requires avahi_pub inside try/catch and falls back when it is missing.
throw new Error('avahi_pub stub: mDNS publishing is disabled in the test peers');
