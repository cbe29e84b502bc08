# `cmake --install`: what a user builds against (docs/install.md).
#
#   include/pserver/             the public headers (include/pserver/, nothing of src/)
#   lib/libpserver_*.a           the four layers' static libraries
#   lib/cmake/pserver/           find_package(pserver): one target, pserver::pserver, carrying
#                                the layers and every dependency they link (ZeroMQ, Abseil, ...)
#   lib/pkgconfig/pserver.pc     the same for pkg-config
#   bin/pserver                  the CLI (scheduler, server, launch, ...)
include(CMakePackageConfigHelpers)

set(PSERVER_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/pserver)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/pserver DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS pserver pserver_kv pserver_cluster pserver_transport pserver_base
  EXPORT pserverTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS pserver_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT pserverTargets NAMESPACE pserver:: DESTINATION ${PSERVER_INSTALL_CMAKEDIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/pserverConfig.cmake.in
  ${PROJECT_BINARY_DIR}/pserverConfig.cmake
  INSTALL_DESTINATION ${PSERVER_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/pserverConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/pserverConfig.cmake ${PROJECT_BINARY_DIR}/pserverConfigVersion.cmake
  DESTINATION ${PSERVER_INSTALL_CMAKEDIR})

# pkg-config: static libraries, so everything they link is in Requires (not Requires.private).
# The prefix is found from the .pc file's own place, so `cmake --install --prefix` anywhere works.
file(RELATIVE_PATH PSERVER_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
configure_file(${PROJECT_SOURCE_DIR}/cmake/pserver.pc.in ${PROJECT_BINARY_DIR}/pserver.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/pserver.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
