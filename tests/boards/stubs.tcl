# Stand-ins for the Vivado commands build.tcl uses (tests/boards/test_tcl.py). Every call is recorded
# in $::vf_calls_file, one per line: the command and its arguments separated by \x1f. Queries answer
# as Vivado would for a design that builds: the newest board part and IPs among two versions, the
# PS's actual clock equal to the one set, the interface parameters Vivado inferred from the wrapper
# (the test passes them in ::inferred), completed runs, and .bit/.hwh files where Vivado writes them.
set vf_calls [open $::vf_calls_file w]
proc vf_record {args} {
    puts $::vf_calls [join [lmap a $args {string map {"\n" "\\n"} $a}] "\x1f"]
}
proc vf_stub {name body} {
    proc $name {args} "vf_record $name {*}\$args\n$body"
}
proc vf_opt {args name {default {}}} {
    set i [lsearch -exact $args $name]
    if {$i < 0} { return $default }
    return [lindex $args [expr {$i + 1}]]
}
# What Vivado knows: the project and block design made so far, and properties set.
array set ::props {}
vf_stub create_project {
    set ::proj_name [lindex $args 0]; set ::proj_dir [lindex $args 1]
    file mkdir $::proj_dir
}
vf_stub get_board_parts { return {xilinx.com:zcu102:part0:3.3 xilinx.com:zcu102:part0:3.4} }
vf_stub current_project { return $::proj_name }
vf_stub current_fileset { return sources_1 }
vf_stub add_files {}
vf_stub update_compile_order {}
vf_stub create_bd_design { set ::bd [lindex $args 0] }
vf_stub get_ipdefs {
    set pat [lindex $args end]
    set base [string range $pat 0 end-1]
    return [list ${base}2.1 ${base}10.2]
}
vf_stub create_bd_cell { return [lindex $args end] }
vf_stub apply_bd_automation {}
vf_stub set_property {
    if {[lindex $args 0] eq "-dict"} {
        foreach {k v} [lindex $args 1] { set ::props([lindex $args 2],$k) $v }
    } else {
        set ::props([lindex $args 2],[lindex $args 0]) [lindex $args 1]
    }
}
vf_stub get_property {
    lassign $args key obj
    switch -glob -- $key {
        CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ {
            return $::props($obj,CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ)
        }
        PROGRESS { return "100%" }
        STATUS { return "write_bitstream Complete!" }
        DIRECTORY { return [file join $::proj_dir $::proj_name.runs [lindex $obj 0]] }
        SLACK { return 0.250 }
        PERIOD { return $::period_ns }
        CONFIG.* {
            set param [string range $key 7 end]
            return [dict get $::inferred $obj $param]
        }
    }
    error "stub get_property: no answer for $key of $obj"
}
foreach q {get_bd_pins get_bd_intf_pins get_bd_addr_spaces get_bd_addr_segs get_runs get_clocks} {
    vf_stub $q { return [lindex $args end] }
}
vf_stub get_timing_paths { return worst_path }
vf_stub get_files { return [file join $::proj_dir $::proj_name.srcs sources_1 bd $::bd [lindex $args 0]] }
vf_stub connect_bd_net {}
vf_stub connect_bd_intf_net {}
vf_stub assign_bd_address {}
vf_stub validate_bd_design {}
vf_stub save_bd_design {}
vf_stub make_wrapper { return [file join $::proj_dir ${::bd}_wrapper.v] }
vf_stub launch_runs {
    set bit [file join $::proj_dir $::proj_name.runs impl_1 ${::bd}_wrapper.bit]
    file mkdir [file dirname $bit]
    set f [open $bit w]; puts -nonewline $f "bitstream"; close $f
    set hwh [file join $::proj_dir $::proj_name.$::hwh_under sources_1 bd $::bd hw_handoff $::bd.hwh]
    file mkdir [file dirname $hwh]
    set f [open $hwh w]; puts -nonewline $f "<hwh/>"; close $f
}
vf_stub wait_on_run {}
vf_stub open_run {}
vf_stub report_utilization { set f [open [vf_opt $args -file] w]; close $f }
vf_stub report_timing_summary { set f [open [vf_opt $args -file] w]; close $f }
