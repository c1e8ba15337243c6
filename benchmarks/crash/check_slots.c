/*
 * The benchmark's consistency checker, built three ways from this one file:
 *   check_slots FILE              one image per run: exit 0 = consistent (pmreorder "prog" checker)
 *   check_slots --persistent      pmemkit's line protocol: a path per stdin line, reply "0" or "1 why"
 *   libcheck_slots.so: int check_slots_buf(const unsigned char *buf, size_t n)
{
	char why[128];
	return check_buf(buf, n, why, sizeof(why));
}

int check_slots(const char *path)   (pmreorder "lib" checker; 0 = consistent)
 *
 * Invariant: the image is 64 slots of 64 bytes; the first 8 bytes of slot i hold 0 or
 * (epoch << 32 | (i + 1)) with epoch 1..3; the rest of the image is zero.
 */
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#define IMAGE 4096

static int check_buf(const unsigned char *buf, size_t n, char *why, size_t whylen)
{
	if (n != IMAGE) {
		snprintf(why, whylen, "image is %zu bytes, expected %d", n, IMAGE);
		return 1;
	}
	for (size_t off = 0; off < IMAGE; off += 8) {
		uint64_t v;
		memcpy(&v, buf + off, 8);
		size_t slot = off / 64;
		if (off % 64 == 0) {
			uint64_t epoch = v >> 32;
			if (v != 0 && ((v & 0xffffffffu) != slot + 1 || epoch < 1 || epoch > 3)) {
				snprintf(why, whylen, "slot %zu holds %#llx", slot, (unsigned long long)v);
				return 1;
			}
		} else if (v != 0) {
			snprintf(why, whylen, "stray data at %#zx", off);
			return 1;
		}
	}
	return 0;
}

static int check_path(const char *path, char *why, size_t whylen)
{
	unsigned char buf[IMAGE + 1];
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(why, whylen, "cannot open %s", path);
		return 2;
	}
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	return check_buf(buf, n, why, whylen);
}

int check_slots_buf(const unsigned char *buf, size_t n)
{
	char why[128];
	return check_buf(buf, n, why, sizeof(why));
}

int check_slots(const char *path)
{
	char why[128];
	return check_path(path, why, sizeof(why));
}

#ifndef CHECK_LIB
int main(int argc, char **argv)
{
	char why[128];
	if (argc == 2 && strcmp(argv[1], "--persistent") == 0) {
		char line[4096];
		while (fgets(line, sizeof(line), stdin)) {
			line[strcspn(line, "\t\n")] = 0;
			if (check_path(line, why, sizeof(why)) == 0)
				fputs("0\n", stdout);
			else
				fprintf(stdout, "1 %s\n", why);
			fflush(stdout);
		}
		return 0;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: %s IMAGE | --persistent\n", argv[0]);
		return 2;
	}
	int rc = check_path(argv[argc - 1], why, sizeof(why));
	if (rc)
		fprintf(stderr, "%s\n", why);
	return rc;
}
#endif
