/*
 * Test-only I/O backend for amidi2net: UMP packets as text lines on
 * stdin / stdout, so that the server and client run without ALSA UMP
 * (no kernel with CONFIG_SND_SEQ_UMP / CONFIG_SND_UMP needed).
 *
 * Part of rtpmidid's test rig (tests/peers/amidi2net/), added to the
 * amidi2net sources at build time; MIT License, like amidi2net.
 *
 * Selected with --stdio.  Like the rawmidi bridge mode, UMP data is copied
 * 1:1 between the network and the pipes, UMP Stream messages included.
 *
 * stdin:  one UMP packet a line, 1 to 4 hexadecimal 32-bit words separated
 *         by blanks, e.g. "20903c64" or "30163c00 00000000"; the number of
 *         words must match the message type (high nibble of the first
 *         word).  Empty lines and lines starting with '#' are skipped; a bad
 *         line is reported on stderr ("stdio: bad line") and skipped.
 *         End of file ends the program, like a closed ALSA device does.
 * stdout: every UMP packet received from the network, one a line, each
 *         word as 8 lowercase hex digits, separated by one space.
 */

#include "amidi2net.h"
#include "options.h"
#include <fcntl.h>
#include <ctype.h>

#define STDIO_LINE_MAX	256

struct am2n_stdio {
	char buf[STDIO_LINE_MAX * 16];
	size_t len;		/* bytes buffered from stdin */
	bool eof;
};

/* UMP packet length in words per message type */
static const unsigned char ump_words[16] = {
	1, 1, 1, 2, 2, 4, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4
};

static int stdio_setup_poll(struct am2n_ctx *ctx, struct pollfd *pfds)
{
	pfds->fd = STDIN_FILENO;
	pfds->events = POLLIN;
	pfds->revents = 0;
	return 1;
}

static int stdio_poll_revents(struct am2n_ctx *ctx, struct pollfd *pfds)
{
	return pfds->revents & (POLLIN | POLLHUP | POLLERR);
}

/* parse one line; return the number of words (> 0), 0 to skip it */
static int parse_line(char *line, uint32_t *ump)
{
	char *p = line, *end;
	unsigned long v;
	int n = 0;

	while (isspace((unsigned char)*p))
		p++;
	if (!*p || *p == '#')
		return 0;
	while (*p) {
		if (n >= 4)
			goto bad;
		v = strtoul(p, &end, 16);
		if (end == p || end - p > 8 || (*end && !isspace((unsigned char)*end)))
			goto bad;
		ump[n++] = v;
		for (p = end; isspace((unsigned char)*p); p++)
			;
	}
	if (n != ump_words[ump[0] >> 28])
		goto bad;
	return n;

 bad:
	error("stdio: bad line: %s", line);
	return 0;
}

/* read a single UMP packet: > 0 words, 0 = nothing more now, < 0 = EOF */
static int stdio_read_ump_packet(struct am2n_ctx *ctx, void *buf)
{
	struct am2n_stdio *st = ctx->io.data;
	char *nl;
	ssize_t n;
	int plen;

	for (;;) {
		nl = memchr(st->buf, '\n', st->len);
		if (!nl && st->eof && st->len) {
			/* last line without newline */
			nl = st->buf + st->len;
			st->len++;
		}
		if (nl) {
			*nl = 0;
			plen = parse_line(st->buf, buf);
			st->len -= nl + 1 - st->buf;
			memmove(st->buf, nl + 1, st->len);
			if (plen > 0)
				return plen;
			continue;
		}
		if (st->eof)
			return -1;
		if (st->len >= sizeof(st->buf) - 1) {
			error("stdio: line too long, dropped");
			st->len = 0;
		}
		n = read(STDIN_FILENO, st->buf + st->len,
			 sizeof(st->buf) - st->len - 1);
		if (n > 0) {
			st->len += n;
		} else if (n == 0) {
			debug("stdio: end of input");
			st->eof = true;
		} else if (errno == EAGAIN || errno == EINTR) {
			return 0;
		} else {
			perror("stdio: read");
			return -1;
		}
	}
}

/* write UMP packet(s): one line per packet */
static int stdio_write_ump_packet(struct am2n_ctx *ctx, const void *buf,
				  int len)
{
	const uint32_t *ump = buf;
	int i, plen;

	while (len > 0) {
		plen = ump_words[*ump >> 28];
		if (plen > len) {
			error("stdio: truncated UMP packet from the network");
			plen = len;
		}
		for (i = 0; i < plen; i++)
			printf(i ? " %08x" : "%08x", ump[i]);
		putchar('\n');
		ump += plen;
		len -= plen;
	}
	if (fflush(stdout))
		return -1;
	return 0;
}

static void stdio_free(struct am2n_ctx *ctx)
{
	free(ctx->io.data);
	ctx->io.data = NULL;
}

static struct ump_io_ops stdio_ops = {
	.setup_poll = stdio_setup_poll,
	.poll_revents = stdio_poll_revents,
	.read_ump_packet = stdio_read_ump_packet,
	.write_ump_packet = stdio_write_ump_packet,
	.free = stdio_free,
};

int am2n_io_stdio_init(struct am2n_ctx *ctx)
{
	struct am2n_stdio *st;
	int fl;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;

	fl = fcntl(STDIN_FILENO, F_GETFL);
	if (fl < 0 || fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK) < 0) {
		perror("stdio: fcntl");
		free(st);
		return -errno;
	}

	strlcpy(ctx->ep_name, ctx->config->ep_name, sizeof(ctx->ep_name));
	strlcpy(ctx->prod_id, ctx->config->prod_id, sizeof(ctx->prod_id));
	ctx->io.handle_stream_msg = false;
	ctx->io.ops = &stdio_ops;
	ctx->io.data = st;
	log("stdio I/O: UMP lines on stdin / stdout");
	return 0;
}
