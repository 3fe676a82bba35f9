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
        "src/scandir.c"
      ],
      "cflags": ["-O3", "-std=c11", "-Wall", "-Wextra"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    }
  ]
}
