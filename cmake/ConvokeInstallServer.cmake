# Install rules for the programs (component "server"); the SDK's rules are
# in ConvokeSdk.cmake (components "libconvoke" and "dev").
install(TARGETS convoke-server convoke RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        COMPONENT server)
install(FILES README.md CHANGELOG.md docs/architecture.md docs/protocol.md docs/security.md
              docs/operations.md docs/signals.md docs/deploy.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT server)
# The unit, the configuration and the logrotate snippet: their places
# follow the prefix given when installing (cmake/ConvokeUnit.cmake).
install(CODE "
  include(\"${PROJECT_SOURCE_DIR}/cmake/ConvokeUnit.cmake\")
  convoke_install_server_files(\"${PROJECT_SOURCE_DIR}\" \"${PROJECT_BINARY_DIR}\"
    \"${CMAKE_INSTALL_BINDIR}\" \"${CMAKE_INSTALL_SYSCONFDIR}\" \"${CMAKE_INSTALL_DOCDIR}\")"
  COMPONENT server)
