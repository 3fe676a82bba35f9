{
  "targets": [
    {
      "target_name": "snapfs_native",
      "sources": [
        "src/addon.c",
        "src/util.c",
        "src/fastcdc.c",
        "src/holes.c",
        "src/fs.c",
        "src/scandir.c",
        "src/readfile.c",
        "src/malloc.c",
        "src/newfile.c",
        "src/unzstd.c"
      ],
      "include_dirs": ["<!(node zstd-sources.cjs include)"],
      "dependencies": ["zstd_decoder"],
      "cflags": ["-O3", "-std=c11", "-Wall", "-Wextra"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    },
    {
      "target_name": "zstd_decoder",
      "type": "static_library",
      "sources": ["<!@(node zstd-sources.cjs sources)"],
      "cflags": ["-O3", "-fPIC", "-fvisibility=hidden"],
      "defines": ["ZSTD_DISABLE_ASM", "ZSTD_LEGACY_SUPPORT=0", "XXH_NAMESPACE=SNAPFS_ZSTD_"]
    },
    {
      "target_name": "snapfs_fuse",
      "sources": ["src/fuse_ll.c", "src/fuse_cache.c", "src/fuse_content.c", "src/fuse_push.c", "src/fuse_fetch.c", "src/fuse_stream.c", "src/node_set.c", "src/stored_chunk.c", "src/util.c"],
      "include_dirs": [
        "<!(node -e \"require('fuse-shared-library-linux/include')\")",
        "<(SHARED_INTERMEDIATE_DIR)/xxh3",
        "<!(node zstd-sources.cjs include)"
      ],
      "dependencies": ["zstd_decoder"],
      "actions": [
        {
          "action_name": "xxh3_header",
          "inputs": ["xxh3-header.cjs"],
          "outputs": ["<(SHARED_INTERMEDIATE_DIR)/xxh3/xxhash.h"],
          "action": ["node", "xxh3-header.cjs", "<(SHARED_INTERMEDIATE_DIR)/xxh3/xxhash.h"]
        }
      ],
      "cflags": ["-O2", "-std=c11", "-Wall", "-Wextra", "-pthread"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8", "_FILE_OFFSET_BITS=64", "FUSE_USE_VERSION=26"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
