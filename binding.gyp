# node-gyp build of the Aegis native addon from the same sources as CMakeLists.txt:
#   npm run build:addon:gyp    (node-gyp rebuild)  -> build/Release/aegis.node
# bpf/build.sh compiles the BPF programs and generates the skeleton for both builds.
{
  'targets': [
    {
      'target_name': 'aegis',
      'sources': [
        'native/src/abi_constants.cc',
        'native/src/addon.cc',
        'native/src/datapath.cc',
        'native/src/datapath_core.cc',
        'native/src/js_error.cc',
        'native/src/notify.cc',
        'native/src/peer_credentials.cc',
        'native/src/status.cc',
        'native/src/token_file.cc',
      ],
      'dependencies': [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except",
      ],
      'include_dirs': [
        'bpf',
        '<(INTERMEDIATE_DIR)/bpf',
      ],
      'defines': ['NAPI_VERSION=8', 'NODE_ADDON_API_DISABLE_DEPRECATED'],
      'cflags': ["<!@(pkg-config --cflags libbpf)", '-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-missing-field-initializers'],
      'cflags_cc': ['-std=gnu++17'],
      'libraries': ["<!@(pkg-config --libs libbpf)"],
      'actions': [
        {
          'action_name': 'bpf_skeleton',
          'inputs': ['bpf/aegis.bpf.c', 'bpf/aegis.h', 'bpf/build.sh'],
          'outputs': ['<(INTERMEDIATE_DIR)/bpf/aegis.skel.h', '<(INTERMEDIATE_DIR)/bpf/aegis.bpf.o'],
          'action': ['bash', 'bpf/build.sh', '<(INTERMEDIATE_DIR)/bpf'],
          'message': 'Compiling BPF programs and generating the skeleton',
        },
      ],
    },
  ],
}
