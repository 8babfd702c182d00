# Included at the end of src/Peer.Native/CMakeLists.txt. Builds peer_native_cuda, the CUDA versions of the kernels
# (include/peer_native_cuda.h), as a separate shared library, plus its tests and benchmark.
#
# PEER_NATIVE_CUDA=AUTO (default) builds it only when a working CUDA compiler is found, so machines without the
# toolkit (CI) configure, build and test exactly as before; ON makes a missing compiler an error; OFF skips even the
# check. Kernels need sm_70 or newer; the default targets are sm_80 (A100) and sm_90 (H100), override with
# -DCMAKE_CUDA_ARCHITECTURES=...
set(PEER_NATIVE_CUDA "AUTO" CACHE STRING "Build peer_native_cuda: AUTO (when a CUDA compiler is found), ON or OFF")
set_property(CACHE PEER_NATIVE_CUDA PROPERTY STRINGS AUTO ON OFF)

if(NOT PEER_NATIVE_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND PEER_NATIVE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "PEER_NATIVE_CUDA=ON but no working CUDA compiler was found (set CMAKE_CUDA_COMPILER, and "
                        "CMAKE_CUDA_HOST_COMPILER if nvcc rejects the default host compiler)")
  endif()
endif()

if(NOT PEER_NATIVE_CUDA STREQUAL "OFF" AND CMAKE_CUDA_COMPILER)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)  # before enable_language, which would otherwise pick the compiler's default
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "peer_native_cuda: CUDA ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")

  # cudart is linked statically (CMake's default with nvcc), so the library needs only the driver at run time; it
  # shares the process's primary context with TorchSharp's own runtime, so device pointers pass between them.
  add_library(peer_native_cuda SHARED
    "${CMAKE_CURRENT_SOURCE_DIR}/cuda/status.cu"
    "${CMAKE_CURRENT_SOURCE_DIR}/cuda/retrieval.cu"
    "${CMAKE_CURRENT_SOURCE_DIR}/cuda/experts.cu"
    "${CMAKE_CURRENT_SOURCE_DIR}/cuda/optimizer.cu")
  target_include_directories(peer_native_cuda PUBLIC "${CMAKE_CURRENT_SOURCE_DIR}/include")
  target_compile_definitions(peer_native_cuda PRIVATE PEER_NATIVE_CUDA_BUILDING)
  set_target_properties(peer_native_cuda PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
    CUDA_VISIBILITY_PRESET hidden)  # only the PEER_CUDA_API C ABI is exported
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(peer_native_cuda PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>")
  endif()

  # Times the kernels at the target shape on a GPU machine (not a test).
  add_executable(peer_native_cuda_bench "${CMAKE_CURRENT_SOURCE_DIR}/cuda/bench.cu")
  set_target_properties(peer_native_cuda_bench PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  target_link_libraries(peer_native_cuda_bench PRIVATE peer_native_cuda)

  if(PEER_NATIVE_BUILD_TESTS)
    # Shared cudart here, as TorchSharp has: the test also checks that pointers cross runtime instances.
    add_executable(peer_native_cuda_tests "${CMAKE_CURRENT_SOURCE_DIR}/tests/cuda_kernel_tests.cpp")
    target_link_libraries(peer_native_cuda_tests PRIVATE peer_native_cuda CUDA::cudart)
    target_compile_options(peer_native_cuda_tests PRIVATE ${PEER_NATIVE_WARNINGS})
    # Registered here rather than in tests/CMakeLists.txt: that directory is added before this file runs.
    enable_testing()
    add_test(NAME cuda_kernels COMMAND peer_native_cuda_tests)
    set_tests_properties(cuda_kernels PROPERTIES SKIP_RETURN_CODE 77)  # no GPU at run time
  endif()
elseif(NOT PEER_NATIVE_CUDA STREQUAL "OFF")
  message(STATUS "peer_native_cuda: no working CUDA compiler found; skipped (PEER_NATIVE_CUDA=${PEER_NATIVE_CUDA})")
endif()
