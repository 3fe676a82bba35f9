{
  "targets": [
    {
      "target_name": "snapfs_native",
      "sources": ["src/addon.c", "src/fastcdc.c", "src/holes.c"],
      "cflags": ["-O3", "-std=c11", "-Wall", "-Wextra"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    }
  ]
}
