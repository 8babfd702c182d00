# Fresh copies for the peer-elf-patch tests. Inputs: WORK, LIB, LIB_NO_RUNPATH, COMPAT.
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/patched" "${WORK}/if-needed" "${WORK}/no-compat" "${WORK}/no-runpath")
file(COPY "${LIB}" "${COMPAT}" DESTINATION "${WORK}/patched")
file(COPY "${LIB}" "${COMPAT}" DESTINATION "${WORK}/if-needed")
file(COPY "${LIB}" DESTINATION "${WORK}/no-compat")
file(COPY "${LIB_NO_RUNPATH}" "${COMPAT}" DESTINATION "${WORK}/no-runpath")
