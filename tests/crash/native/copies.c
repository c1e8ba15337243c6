/* Calls one of libpmem's copy or set functions (argv[1]) once on a fresh 4 KiB pool (argv[2]):
 * 100 bytes at offset 64. Each is wrapped by the interposer; the test checks what it traced. */
#include <libpmem.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	size_t mapped;
	int is_pmem;
	char src[100];

	if (argc != 3)
		return 2;
	char *base = pmem_map_file(argv[2], 4096, PMEM_FILE_CREATE, 0644, &mapped, &is_pmem);
	if (!base)
		return 3;
	memset(src, 'S', sizeof(src));
	char *d = base + 64;
	const char *fn = argv[1];
	if (!strcmp(fn, "pmem_memmove_persist"))
		pmem_memmove_persist(d, src, 100);
	else if (!strcmp(fn, "pmem_memcpy_persist"))
		pmem_memcpy_persist(d, src, 100);
	else if (!strcmp(fn, "pmem_memmove_nodrain"))
		pmem_memmove_nodrain(d, src, 100);
	else if (!strcmp(fn, "pmem_memcpy_nodrain"))
		pmem_memcpy_nodrain(d, src, 100);
	else if (!strcmp(fn, "pmem_memset_persist"))
		pmem_memset_persist(d, 'S', 100);
	else if (!strcmp(fn, "pmem_memset_nodrain"))
		pmem_memset_nodrain(d, 'S', 100);
	else if (!strcmp(fn, "pmem_memmove"))
		pmem_memmove(d, src, 100, PMEM_F_MEM_NODRAIN);
	else if (!strcmp(fn, "pmem_memcpy"))
		pmem_memcpy(d, src, 100, 0);
	else if (!strcmp(fn, "pmem_memset"))
		pmem_memset(d, 'S', 100, PMEM_F_MEM_NODRAIN);
	else
		return 4;
	pmem_unmap(base, mapped);
	return 0;
}
