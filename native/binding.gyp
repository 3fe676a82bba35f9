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
        "src/newfile.c"
      ],
      "cflags": ["-O3", "-std=c11", "-Wall", "-Wextra"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    },
    {
      "target_name": "snapfs_fuse",
      "sources": ["src/fuse_ll.c", "src/fuse_cache.c", "src/util.c"],
      "include_dirs": ["<!(node -e \"require('fuse-shared-library-linux/include')\")"],
      "cflags": ["-O2", "-std=c11", "-Wall", "-Wextra", "-pthread"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8", "_FILE_OFFSET_BITS=64", "FUSE_USE_VERSION=26"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
