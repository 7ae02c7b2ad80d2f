/* The compiled client of bench/ws.py: echoes a pre-built WebSocket frame on sockets it inherits.
 *
 * Why C: bench/ws.py measures server CPU per message with every connection holding one
 * message at a time. With the Python client (bench/ws_client.py) a client process costs
 * about as much per message as the server, so the two fall into a lock-step where each side
 * sleeps while the other works and the server's figure depends on how often it is woken (a
 * server that answers faster sleeps more, and each wake-up on a loaded core costs more). This
 * client costs a few microseconds per message, so the server always has work queued and
 * what is measured is its work per message.
 *
 * bench/ws.py does the HTTP upgrade in Python (ws_client.handshake), writes the client frame
 * to a file, then runs this with the upgraded sockets as inherited descriptors:
 *
 *     ws_load FRAME_FILE COUNTER_FILE FD...
 *
 * It sends the frame on every socket, and each time a whole data frame comes back it sends
 * it again. COUNTER_FILE (8 bytes, mapped shared) holds the number of echoes completed, read
 * by bench/ws.py at the start and end of each window. Pings are answered; a close frame from
 * the server or any error ends it with a message on stderr and exit status 1. SIGTERM ends it
 * cleanly (exit 0) after a close frame on each socket.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define READ_SIZE (256 * 1024)

static volatile sig_atomic_t stopping = 0;

static void on_term(int sig) { (void)sig; stopping = 1; }

struct conn {
    int fd;
    uint64_t skip;      /* payload bytes of the current data frame still to come */
    int final;          /* that frame ends its message */
    unsigned char head[14 + 125]; /* a frame header (or control frame) split over reads */
    size_t head_len;
};

static const unsigned char MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

static void die(const char *what) {
    fprintf(stderr, "ws_load: %s: %s\n", what, errno ? strerror(errno) : "error");
    exit(1);
}

static void send_all(int fd, const unsigned char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR && stopping) exit(0); /* SIGTERM while blocked on a peer that stopped reading */
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { /* the socket is blocking; should not happen */ continue; }
            die("send");
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* A masked client control frame (pong or close) with a payload of at most 125 bytes. */
static void send_control(int fd, unsigned char opcode, const unsigned char *body, size_t len) {
    unsigned char out[6 + 125];
    out[0] = 0x80 | opcode;
    out[1] = 0x80 | (unsigned char)len;
    memcpy(out + 2, MASK, 4);
    for (size_t i = 0; i < len; i++) out[6 + i] = body[i] ^ MASK[i % 4];
    send_all(fd, out, 6 + len);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: ws_load FRAME_FILE COUNTER_FILE FD...\n");
        return 2;
    }
    int ffd = open(argv[1], O_RDONLY);
    if (ffd < 0) die("open frame file");
    struct stat st;
    if (fstat(ffd, &st) < 0) die("stat frame file");
    size_t frame_len = (size_t)st.st_size;
    unsigned char *frame = malloc(frame_len);
    if (!frame) die("malloc");
    for (size_t got = 0; got < frame_len;) {
        ssize_t n = read(ffd, frame + got, frame_len - got);
        if (n <= 0) die("read frame file");
        got += (size_t)n;
    }
    close(ffd);
    int cfd = open(argv[2], O_RDWR);
    if (cfd < 0) die("open counter file");
    volatile uint64_t *counter = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
    if (counter == MAP_FAILED) die("mmap counter file");

    int nconns = argc - 3;
    if (nconns > MAX_CONNS) { fprintf(stderr, "ws_load: at most %d sockets\n", MAX_CONNS); return 2; }
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    unsigned char *buf = malloc(READ_SIZE);
    if (!conns || !buf) die("malloc");
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    for (int i = 0; i < nconns; i++) {
        conns[i].fd = atoi(argv[3 + i]);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
    }
    for (int i = 0; i < nconns; i++) send_all(conns[i].fd, frame, frame_len);

    uint64_t done = 0;
    struct epoll_event events[MAX_CONNS];
    while (!stopping) {
        int ready = epoll_wait(ep, events, nconns, 50);
        if (ready < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < ready; e++) {
            struct conn *c = &conns[events[e].data.u32];
            ssize_t n = recv(c->fd, buf, READ_SIZE, 0);
            if (n == 0) { errno = 0; fprintf(stderr, "ws_load: the server closed a connection\n"); return 1; }
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                die("recv");
            }
            size_t pos = 0, len = (size_t)n;
            while (pos < len) {
                if (c->skip) {
                    size_t take = len - pos < c->skip ? len - pos : (size_t)c->skip;
                    c->skip -= take;
                    pos += take;
                    if (c->skip == 0 && c->final) {
                        *counter = ++done;
                        send_all(c->fd, frame, frame_len);
                    }
                    continue;
                }
                /* A frame header, possibly continuing one split over reads: gather it in head. */
                size_t want = 2;
                if (c->head_len >= 2) {
                    unsigned char b1 = c->head[1] & 0x7f;
                    want = b1 < 126 ? 2 : b1 == 126 ? 4 : 10;
                    if ((c->head[0] & 0x0f) >= 8) want += b1; /* a control frame: its body too */
                }
                while (c->head_len < want && pos < len) {
                    c->head[c->head_len++] = buf[pos++];
                    if (c->head_len == 2) {
                        unsigned char b1 = c->head[1] & 0x7f;
                        if (c->head[1] & 0x80) { fprintf(stderr, "ws_load: a masked server frame\n"); return 1; }
                        want = b1 < 126 ? 2 : b1 == 126 ? 4 : 10;
                        if ((c->head[0] & 0x0f) >= 8) {
                            if (b1 > 125) { fprintf(stderr, "ws_load: a control frame over 125 bytes\n"); return 1; }
                            want += b1;
                        }
                    }
                }
                if (c->head_len < want) break; /* the rest comes with the next read */
                unsigned char opcode = c->head[0] & 0x0f, b1 = c->head[1] & 0x7f;
                if (opcode >= 8) {
                    if (opcode == 9) send_control(c->fd, 0x0a, c->head + 2, b1);
                    else if (opcode == 8) { fprintf(stderr, "ws_load: the server sent a close frame\n"); return 1; }
                    c->head_len = 0;
                    continue;
                }
                uint64_t length = b1;
                if (b1 == 126) length = ((uint64_t)c->head[2] << 8) | c->head[3];
                else if (b1 == 127) {
                    length = 0;
                    for (int k = 2; k < 10; k++) length = (length << 8) | c->head[k];
                }
                c->final = (c->head[0] & 0x80) != 0;
                c->head_len = 0;
                c->skip = length;
                if (length == 0 && c->final) {
                    *counter = ++done;
                    send_all(c->fd, frame, frame_len);
                }
            }
        }
    }
    /* A close frame (1000) on each socket, best effort: the server may be gone already. */
    static const unsigned char close_frame[8] = {0x88, 0x82, 0x37, 0xfa, 0x21, 0x3d, 0x03 ^ 0x37, 0xe8 ^ 0xfa};
    for (int i = 0; i < nconns; i++) {
        (void)send(conns[i].fd, close_frame, sizeof close_frame, MSG_NOSIGNAL | MSG_DONTWAIT);
        close(conns[i].fd);
    }
    return 0;
}
